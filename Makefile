# Two commands matter: `make demo` (the main job) and `make test` (the whole suite).
# Both bootstrap everything they need from a fresh clone: .venv, Python deps, the pinned
# MicroPython WebAssembly runtime, and Mosquitto (apt-get, when missing and running as root).

PY      := .venv/bin/python
STAMP   := .venv/.installed
NPMSTAMP:= node_modules/.installed
PYTEST_ARGS ?=

.PHONY: all demo test bench setup clean syspkgs

all: test

$(STAMP): pyproject.toml requirements.lock
	python3 -m venv .venv
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation --config-settings editable_mode=compat -e .
	touch $@

$(NPMSTAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# System packages the tests use: the Mosquitto broker, and the CJK font the tools render
# reason-tag labels with (WenQuanYi Zen Hei has hand-tuned bitmap strikes at 12-16 px).
SYSPKGS := mosquitto:/usr/sbin/mosquitto fonts-wqy-zenhei:/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc

syspkgs:
	@missing=""; for p in $(SYSPKGS); do [ -e "$${p#*:}" ] || missing="$$missing $${p%%:*}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing$$missing (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing system packages:$$missing (not root: install them with apt-get, or those tests skip)"; \
	  fi; \
	fi

setup: $(STAMP) $(NPMSTAMP) syspkgs

demo: $(STAMP) syspkgs
	$(PY) -m tools.hcp demo

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) -m tests.bench

clean:
	rm -rf .venv node_modules .pytest_cache .hypothesis
