# The two commands of the README: `make demo` and `make test`.
# Each creates .venv with Python 3.11 and installs requirements.txt first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
DEMO_DIR := runs/demo

.PHONY: demo test install clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

demo: install
	$(PY) -m data.synthetic --output_dir=$(DEMO_DIR)/data --rows=200000 --num_shards=4
	$(PY) -m benchmarks.input_pipeline --data_dir=$(DEMO_DIR)/data --batches=20

test: install
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) runs
