# Quick start:  make demo  (set up, train recipes/tiny.yaml on the bundled Wikipedia sample, evaluate, split, reconstruct, sample, infill; about 20 minutes on 2 cores)
#               make test  (set up, run the default test suite: everything but `slow`; `gpu` tests skip without CUDA)
#               make test-fast  (the default suite less the `learning` tests that train micro models)
#               make lint  (ruff and the type checker)
# Everything installs into .venv. TORCH_SPEC pins the CPU build of torch found on this kind of
# machine; on a GPU machine use e.g. `make setup TORCH_SPEC=torch`.

VENV ?= .venv
PY := $(VENV)/bin/python
ZONKEY := $(VENV)/bin/zonkey
TORCH_SPEC ?= torch==2.13.0
DEMO_RUN ?= runs/demo-tiny
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast test-slow test-gpu lint bench clean-demo

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"
	touch $@

demo: setup
	rm -rf $(DEMO_RUN)
	# TensorBoard event files too where the extra is installed (pip install -e ".[tensorboard]")
	$(ZONKEY) train recipes/tiny.yaml --out $(DEMO_RUN) $$($(PY) -c 'import tensorboard; print("--set train.loggers=[jsonl,tensorboard]")' 2>/dev/null)
	# a shorter evaluation than the default (50 samples, 100 infill items, 500 prior positions)
	$(ZONKEY) eval $(DEMO_RUN) --samples 50 --infill 100 --prior-positions 500 --throughput 0
	$(ZONKEY) split $(DEMO_RUN) "The river flows through the old city." "Photosynthesis converts light into chemical energy."
	$(ZONKEY) reconstruct $(DEMO_RUN) "The river flows through the old city." "Photosynthesis converts light into chemical energy."
	$(ZONKEY) sample $(DEMO_RUN) -n 8
	$(ZONKEY) infill $(DEMO_RUN) "The river flows through the ___ city."

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -q -m 'not slow and not learning' $(PYTEST_ARGS)

test-slow: setup
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

test-gpu: setup
	$(PY) -m pytest -q -m gpu $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check zonkey tests benchmarks examples
	$(VENV)/bin/basedpyright --pythonpath $(PY)

bench: setup
	$(PY) benchmarks/attention.py
	$(PY) benchmarks/train.py

clean-demo:
	rm -rf $(DEMO_RUN)
