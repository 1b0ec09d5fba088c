# One-command setup: every target creates .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-all gpu-test bench browser clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# Pin torch first: a loose spec would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lmzoo demo

# Two pytest-xdist workers, one torch thread each (tests/conftest.py): most tests are small models
# whose Python overhead one thread cannot hide, so the 2 cores are busier this way.
test: $(STAMP) browser
	$(PY) -m pytest -q -n 2

test-all: $(STAMP) browser
	$(PY) -m pytest -q -n 2 -m 'not gpu'

gpu-test: $(STAMP)
	$(PY) -m pytest -q -m gpu

# Debian's chromium and its driver for the playground's browser test (tests/test_playground_browser.py);
# installed only when missing, and only where apt-get can run as root. Nothing downloads browser builds.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq >/dev/null && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
		else \
			echo "note: chromium/chromedriver missing and not installable here: the browser test will skip"; \
		fi; \
	fi

bench: $(STAMP)
	$(PY) benchmarks/throughput.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
