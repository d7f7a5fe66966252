# The README's two commands: `make demo` (main job end to end) and `make test`. Each sets itself up.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: prereqs setup stack demo lint test bench clean-stack

# System packages (Redis, venv; Java for the tests): installed as root, else named with their install command.
prereqs:
	PY=$(PY) .ci/prereqs $(PREREQS)

test: PREREQS = test

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

setup: prereqs $(STAMP)

stack: setup
	$(BIN)/capq stack up

demo: stack
	$(BIN)/capq demo $(if $(KEEP),--keep-running)

# Lint and format are checked, never applied, here: `$(BIN)/ruff format . && $(BIN)/ruff check --fix .` applies them.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint stack
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: stack
	for m in worker_bench submit_bench eval_bench; do $(BIN)/python -m bench.$$m || exit 1; done

clean-stack:
	-$(BIN)/capq stack down
	rm -rf .capq/stack
