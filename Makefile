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

# System packages the tests use: the Mosquitto broker, the CJK font the tools render
# reason-tag labels with (WenQuanYi Zen Hei has hand-tuned bitmap strikes at 12-16 px) and the
# console pages show, and Debian's Chromium, which the console tests drive through Playwright
# (Playwright's own browser download is not used).
SYSPKGS := mosquitto:/usr/sbin/mosquitto fonts-wqy-zenhei:/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc \
           chromium:/usr/bin/chromium

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

# seconds the demo hall (and its console) stays up after the summary; Ctrl-C ends it sooner
DEMO_HOLD ?= 600

demo: $(STAMP) syspkgs
	$(PY) -m tools.hcp demo --hold $(DEMO_HOLD)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) -m tests.bench

clean:
	rm -rf .venv node_modules .pytest_cache .hypothesis
