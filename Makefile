# Two commands do all set-up on a fresh machine with Python 3.11+ and make:
#   make demo   creates .venv, installs, starts the sandbox and runs the pipeline against it
#   make test   creates .venv, installs, runs the tests
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: install test demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/rhub demo

bench: $(STAMP)
	$(VENV)/bin/python bench/sandbox_bench.py

clean:
	rm -rf $(VENV) .pytest_cache demo
