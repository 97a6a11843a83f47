# The two commands of the README: `make demo` and `make test`.
# Each creates .venv with Python 3.11 and installs requirements.txt first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
DEMO_DIR := runs/demo

.PHONY: demo test test-load install clean

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

# Two pytest workers (pytest-xdist): the suite spends much of its time
# starting TensorFlow processes, which two workers overlap on 2 cores
# (measured on a quiet 2-core machine: 1,065 s serial; 532-728 s with -n 2,
# 484-629 s since the tracing cuts of docs/results.md, "A trainer run's
# fixed cost"; 496 s with the training step traced once, 461 s with the
# evaluator's pipeline built once too).
test: install
	$(PY) -m pytest -q -n 2 tests

# The serving and trainer tests while two CPU-bound busy loops compete for
# the cores, as on a busy CI machine. Each loop stops by itself after
# LOAD_SECONDS, and is stopped when the tests end.
LOAD_SECONDS ?= 1800
test-load: install
	@pids=""; for i in 1 2; do \
	  timeout $(LOAD_SECONDS) $(PY) -c "while True: pass" & pids="$$pids $$!"; \
	done; \
	$(PY) -m pytest -q tests/test_serving.py tests/test_trainer.py \
	  tests/test_parameter_server.py; \
	status=$$?; kill $$pids 2>/dev/null; exit $$status

clean:
	rm -rf $(VENV) runs
