# Two commands matter: `make demo` (the main job) and `make test` (the whole suite).
# Both bootstrap everything they need from a fresh clone: .venv, Python deps, the pinned
# MicroPython WebAssembly runtime, and Mosquitto (apt-get, when missing and running as root).

PY      := .venv/bin/python
STAMP   := .venv/.installed
NPMSTAMP:= node_modules/.installed
PYTEST_ARGS ?=

.PHONY: all demo test bench setup clean mosquitto

all: test

$(STAMP): pyproject.toml requirements.lock
	python3 -m venv .venv
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation --config-settings editable_mode=compat -e .
	touch $@

$(NPMSTAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

mosquitto:
	@command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing mosquitto (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; \
	  else \
	    echo "mosquitto is missing and this is not root: MQTT tests will be skipped"; \
	  fi; }

setup: $(STAMP) $(NPMSTAMP) mosquitto

demo: $(STAMP)
	$(PY) -m tools.hcp demo

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) -m tests.bench

clean:
	rm -rf .venv node_modules .pytest_cache .hypothesis
