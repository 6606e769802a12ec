# imgbatch — the two quick-start commands are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test install services browser lint bench clean

$(BIN)/.installed: pyproject.toml setup.py src/imgbatch/imaging/_jpegdct.c
	bash scripts/system-packages.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed

## Set up and run the whole service on embedded defaults (SQLite, local files, SQLite queue).
run: install
	$(BIN)/imgbatch serve

## Set up and run the whole test suite (starts PostgreSQL and Redis if they are down).
test: install services browser
	$(BIN)/ruff check src tests
	$(BIN)/mypy src
	$(BIN)/lint-imports --no-logo
	$(BIN)/pytest

services:
	bash scripts/services.sh

## The browser the dashboard tests drive: Debian's Chromium (never `playwright install`).
browser:
	bash scripts/browser.sh

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy src
	$(BIN)/lint-imports --no-logo

bench: install
	bash scripts/system-packages.sh --bench
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/throughput.py --megapixels 0.5 2 --images 3000 600 --ab --repeat 3

clean:
	rm -rf $(VENV) data .pytest_cache build src/imgbatch/imaging/*.so
