# Credence: `make demo` runs a local federation, `make test` runs the suite.
# Every target bootstraps the virtualenv it needs.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROTOS := $(wildcard proto/credence/v1/*.proto)

.PHONY: install demo proto check-protos lint test bench profile clean

install: $(STAMP)

# Reinstall when the dependency list changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Regenerate the committed stubs in credence/v1/ from proto/.
proto: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m grpc_tools.protoc -Iproto \
	  --python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. $(PROTOS)

# Fail when the committed stubs differ from what the protos generate.
check-protos: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" scripts/check-protos.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/buf lint
	$(MAKE) --no-print-directory check-protos

test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

# A local federation, a short verified story, and everything down again.
demo: $(STAMP)
	$(BIN)/python -m credence.dev.demo

# The registry with 8 agency node processes (see README, Benchmarks).
bench: $(STAMP)
	$(BIN)/python -m bench.bench_registry $(BENCH_ARGS)

# py-spy flame graphs of the registry, each asked node and the client under load.
profile: $(STAMP)
	$(BIN)/python -m bench.profile_federation $(PROFILE_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
