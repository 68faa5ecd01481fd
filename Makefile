# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PORT ?= 8080
BIN := $(VENV)/bin

$(BIN)/.installed: requirements.txt requirements-dev.txt requirements-frameworks.txt requirements-keras2.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -r requirements-keras2.txt
	touch $@

.PHONY: serve test lint
serve: $(BIN)/.installed  ## run the function on http://127.0.0.1:$(PORT)
	$(BIN)/functions-framework --target predict --source main.py --port $(PORT)

test: $(BIN)/.installed lint  ## lint, then every test
	$(BIN)/python -m pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/shellcheck deploy.sh .ci/run
