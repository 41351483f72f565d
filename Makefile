# Paradigm Lab: `make lab` and `make test` set themselves up (a local .venv) on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PORT   ?= 8888
PY     := $(VENV)/bin/python
JOBS   ?= 2

# Under test: one thread per kernel (2 kernels on 2 cores), no progress bars, no hub access.
TEST_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TQDM_DISABLE=1 HF_HUB_OFFLINE=1 \
            TRANSFORMERS_VERBOSITY=error HF_HUB_DISABLE_PROGRESS_BARS=1 JUPYTER_PLATFORM_DIRS=1 \
            PYDEVD_DISABLE_FILE_VALIDATION=1

.PHONY: help setup lab test test-data test-unit test-notebooks test-seeds notebooks bench book assignments clean panel-data

help:
	@echo "make lab    start JupyterLab on 127.0.0.1:$(PORT) (PORT=... to change)"
	@echo "make test   unit tests, cross-checks with transformers, notebooks under nbval"
	@echo "make notebooks  re-execute notebooks/*.py into their .ipynb pairs (NB=03 for one)"
	@echo "make test-data  regenerate every file under data/ (the panels' stored runs: minutes) and compare"
	@echo "make test-seeds  every notebook under LABKIT_SEED=1 and 2 (SEEDS=...): claims must hold, none thin"
	@echo "make bench  performance table in bench/ (results.md, results.csv, notebooks.png)"
	@echo "make book   static HTML site of the executed notebooks in book/"
	@echo "make assignments  student versions in build/student (OUT=dir)"

setup:
	@$(PYTHON) tools/setup_env.py --venv $(VENV)

lab: setup
	HF_HUB_OFFLINE=1 $(PY) -m jupyter lab --ip=127.0.0.1 --port=$(PORT) \
	  $(if $(filter 0,$(shell id -u)),--allow-root) README.md

test: setup
	$(TEST_ENV) $(PY) -m pytest -n $(JOBS) --dist loadscope \
	  --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
	  --nbval-cell-timeout=300 --nbval-kernel-startup-timeout=120 \
	  tests notebooks

test-data: setup
	$(TEST_ENV) LABKIT_DEVICE=cpu $(PY) -m pytest -n $(JOBS) -m regen tests/test_data_integrity.py

test-unit: setup
	$(TEST_ENV) $(PY) -m pytest -n $(JOBS) tests

test-notebooks: setup
	$(TEST_ENV) $(PY) -m pytest -n $(JOBS) --dist loadscope -p no:python \
	  --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg notebooks

notebooks: setup
	$(TEST_ENV) $(PY) tools/execute_notebooks.py $(NB)

test-seeds: setup
	$(TEST_ENV) $(PY) tools/run_seeds.py --seeds $(or $(SEEDS),1 2) --jobs $(JOBS) --fail-thin

bench: setup
	$(TEST_ENV) $(PY) tools/bench.py --readme --repeats $(or $(REPEATS),3) --notebook-repeats $(or $(NB_REPEATS),1)

book: setup
	$(PY) tools/build_book.py --out book

assignments: setup
	$(PY) -m labkit.assignments build --out $(or $(OUT),build/student)

panel-data: setup
	$(TEST_ENV) LABKIT_DEVICE=cpu $(PY) tools/panel_data.py $(PANELS)

clean:
	rm -rf .pytest_cache .hypothesis artifacts
