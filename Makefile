# Two commands do all set-up on a fresh machine (Python 3.11+ with venv):
#   make demo   runs the L1 example launch on the embedded default
#   make test   runs the test suite
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml sandbox/pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test lint down clean

$(STAMP): pyproject.toml sandbox/pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]" -e ./sandbox
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tminus demo examples/l1.yaml

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy -p tminus -p tminus_sandbox
	$(BIN)/lint-imports

down: $(STAMP)
	$(BIN)/tminus down

clean:
	-$(BIN)/tminus down
	rm -rf $(VENV) .tminus
