# The two commands of the README: `make demo` and `make test`.
# Each creates .venv and installs the project (with its dev extra) when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck bench bench-smoke proto clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/meridian demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench --concurrency 10,200

bench-smoke: $(STAMP)
	$(BIN)/python -m bench --concurrency 4 --duration 2

# Regenerate the committed gRPC/protobuf stubs (+ .pyi) from proto/**/*.proto;
# tests/gateway/test_grpc_stubs.py fails when they are stale.
proto: $(STAMP)
	$(BIN)/python -m proto.generate

clean:
	rm -rf $(VENV) build *.egg-info
