# The two commands of the README: `make demo` and `make test`.
# Each creates .venv and installs the project (with its dev extra) when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# checkov (the Terraform checks in tests/terraform) pins an old `packaging`
# that breaks pytest, so it lives in a venv of its own.
CHECKOV_VENV := .venv-checkov
CHECKOV      := $(CHECKOV_VENV)/bin/checkov

.PHONY: demo test test-random lint bench bench-deps bench-smoke geo proto clean terraform-check promtool slo-rules-test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/meridian demo

# --durations: the ten slowest tests end every run, so the suite's time stays visible.
test: $(STAMP) $(CHECKOV) promtool
	$(BIN)/python -m pytest -q --durations=10

# The suite in a random order (pytest-randomly); `make test-random SEED=N`
# replays the order of the run that printed "random order: seed N".
SEED ?= $(shell od -An -N4 -tu4 /dev/urandom | tr -d ' ')
test-random: $(STAMP) $(CHECKOV) promtool
	@echo "random order: seed $(SEED)"
	$(BIN)/python -m pytest -q --durations=10 -o addopts="-m 'not slow' -p no:cacheprovider" -p randomly --randomly-seed=$(SEED)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# promtool for the SLO rule tests (tests/gateway/test_slo_rules.py): from PATH, or
# unpacked from Debian's prometheus package into .venv/bin; fails saying why.
promtool:
	@deploy/install-promtool.sh $(BIN) >/dev/null

slo-rules-test: promtool
	cd deploy/prometheus && "$$(../install-promtool.sh ../../$(BIN))" test rules meridian.rules.test.yml

# Every target of docs/design.md §8 judged in one run (bench/README.md): both scenarios
# at 10 and 200 streams, the throughput scenario at 1 and 2 workers, 10,000 idle streams.
bench: $(STAMP) bench-deps
	$(BIN)/python -m bench --concurrency 10,200 --duration 8 --workers 1,2 --idle-streams 10000

# nginx, the bench's reference contender (Debian's nginx-light), installed when
# missing; without root or apt-get the bench runs without it and says so.
bench-deps:
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends nginx-light >/dev/null; } || \
	  echo "bench-deps: could not install nginx-light; the bench will skip nginx"

bench-smoke: $(STAMP)
	$(BIN)/python -m bench --concurrency 4 --duration 2

# The geo lab (docs/geo-lab.md): three simulated regions, every scenario (~4-5 min).
geo: $(STAMP)
	$(BIN)/python -m bench.geo $(ARGS)

# Regenerate the committed stubs (+ .pyi) in meridian_proto/ from proto/**/*.proto;
# tests/gateway/test_grpc_stubs.py fails when they are stale.
proto: $(STAMP)
	$(BIN)/python -m meridian_proto.generate

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) build *.egg-info

$(CHECKOV):
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet 'checkov>=3.2,<4'

# The Terraform checks alone: fmt, validate (offline provider mirror), checkov
# and the generated config; `make test` runs them too.
terraform-check: $(STAMP) $(CHECKOV)
	$(BIN)/python -m pytest -q tests/terraform
