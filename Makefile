# Two entry points for a new user: `make demo` and `make test`.
# Each creates .venv and installs the project (with dev tools) on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.installed-runtime
STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint typecheck bench clean interop-servers
MLFLOW_VENV := .venv-mlflow
MLFLOW_STAMP := $(MLFLOW_VENV)/.installed

# The demo needs only the runtime; the tests also need the dev tools and the optional extras
# (MLflow tracking, and the independent V2 servers/clients the interop tests profile).
$(RUNTIME): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(RUNTIME)

$(STAMP): $(RUNTIME)
	$(BIN)/pip install --quiet -e '.[dev,mlflow,interop,gpu]'
	touch $(STAMP)

# The interop matrix's model servers (tests/test_interop.py), each in an environment of its own: they pin
# versions that conflict with each other and with ours. Triton (bundled in PyTriton) runs its Python backend
# against Debian's libpython3.11, so its environment is made from Debian's python (.ci/setup.d/20-interop-servers.sh).
TRITON_PYTHON ?= /usr/bin/python3
INTEROP_STAMPS := .venv-kserve/.installed .venv-triton/.installed .venv-bentoml/.installed

.venv-kserve/.installed:
	test -x .venv-kserve/bin/python || $(PYTHON) -m venv .venv-kserve
	.venv-kserve/bin/pip install --quiet --upgrade pip
	.venv-kserve/bin/pip install --quiet 'kserve==0.21.0' 'scikit-learn>=1.4'
	touch $@

.venv-triton/.installed:
	test -x .venv-triton/bin/python || $(TRITON_PYTHON) -m venv .venv-triton
	.venv-triton/bin/pip install --quiet --upgrade pip
	.venv-triton/bin/pip install --quiet 'nvidia-pytriton==0.7.0' 'scikit-learn>=1.4'
	touch $@

.venv-bentoml/.installed:
	test -x .venv-bentoml/bin/python || $(PYTHON) -m venv .venv-bentoml
	.venv-bentoml/bin/pip install --quiet --upgrade pip
	.venv-bentoml/bin/pip install --quiet 'bentoml==1.4.40' 'scikit-learn>=1.4'
	touch $@

interop-servers: $(INTEROP_STAMPS)

# The MLflow tracking server the history tests start (tests/test_gate_mlflow.py). The full `mlflow` package
# pins many libraries, so it gets its own environment; the profiler talks to it through mlflow-skinny.
$(MLFLOW_STAMP):
	test -x $(MLFLOW_VENV)/bin/python || $(PYTHON) -m venv $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/pip install --quiet --upgrade pip
	$(MLFLOW_VENV)/bin/pip install --quiet 'mlflow>=3,<4'
	touch $(MLFLOW_STAMP)

demo: $(RUNTIME)
	$(BIN)/profiler demo

# Two passes: everything that tolerates a neighbour on two processes, then the tests that bound timing alone.
test: $(STAMP) $(MLFLOW_STAMP) $(INTEROP_STAMPS)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup -m "not serial"
	$(BIN)/python -m pytest -q -p no:xdist -m serial

lint: $(STAMP)
	$(BIN)/ruff check profiler tests bench
	$(BIN)/mypy profiler
	$(BIN)/lint-imports
	@# every function under cyclomatic complexity 20 (radon grade D and worse start at 21)
	@out="$$($(BIN)/radon cc -n D -s profiler)"; if [ -n "$$out" ]; then echo "$$out"; echo "complexity over 20"; exit 1; fi

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) $(MLFLOW_VENV) .venv-kserve .venv-triton .venv-bentoml build *.egg-info .pytest_cache .mypy_cache .ruff_cache profiler-demo
