# make demo: set up .venv and run the end-to-end demo. make test: set up .venv and run the test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-dev.txt
	# visdom (live plots) has no wheel: its sdist needs an older setuptools and no build isolation
	$(PY) -m pip install -q "setuptools<81"
	$(PY) -m pip install -q --no-build-isolation visdom
	touch $(STAMP)

demo: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} bash scripts/demo.sh

test: $(STAMP)
	$(PY) -m ruff check .
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) -m pytest -q tests

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) results datasets/demo
