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

# Generate data -> train the default RankUp -> export (validated) -> answer.
demo: install
	rm -rf $(DEMO_DIR)
	$(PY) -m data.synthetic --output_dir=$(DEMO_DIR)/data --rows=200000 --num_shards=4
	$(PY) -m trainer.train --train_files='$(DEMO_DIR)/data/train-*' \
	  --eval_files='$(DEMO_DIR)/data/eval-*' --schema=$(DEMO_DIR)/data/schema.json \
	  --model=rankup --model_dir=$(DEMO_DIR)/model --export_dir=$(DEMO_DIR)/export \
	  --global_batch_size=1024 --epochs=1
	$(PY) -m serving.predict --export_base=$(DEMO_DIR)/export --model_name=rankup \
	  --examples='$(DEMO_DIR)/data/eval-00000-of-00004.tfrecord' --count=5

test: install
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) runs
