# Two commands do all set-up on a fresh machine:
#   make demo   - create .venv, install, train on the bundled table, sample, write a report
#   make test   - create .venv, install, run the whole test suite
#   make docs   - build the documentation site into site/ (mkdocs build --strict)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.installed

.PHONY: demo test test-unit docs install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first: its CPU wheel; a plain `pip install torch` would pull a multi-GB CUDA build
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cadasg demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q -ra --durations=15

test-unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

docs: $(STAMP)
	$(PY) -m mkdocs build --strict

clean:
	rm -rf $(VENV) runs site .pytest_cache
