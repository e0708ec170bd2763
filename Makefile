# Two commands set everything up from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# Debian packages: gcc builds the C reference kernels in bench/, redis-server serves
# bluesky-queueserver, postgresql is the catalog database of `trainstamp serve` (the tests
# start a private cluster with its initdb/pg_ctl, in /usr/lib/postgresql/<N>/bin).
DEBS   := gcc redis-server postgresql

.PHONY: all venv debs demo test lint bench fuzz clean

all: test

debs:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $(STAMP)

venv: debs $(STAMP)

demo: venv
	$(VENV)/bin/trainstamp demo

lint: venv
	$(VENV)/bin/ruff check .

test: venv lint
	$(PY) -m pytest

# The fuzz suites at 100,000 cases each (make test runs them at 10,000), and the whole
# of each test matrix (make test runs a cross-section: tests marked long are left out).
fuzz: venv
	TRAINSTAMP_FUZZ_CASES=100000 $(PY) -m pytest -m "fuzz or long" -s --timeout 3600

bench: venv
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
