# The two commands of the README's quick start:
#   make chat   install chanserv into .venv and run the tutorial's chat example
#   make test   install, then lint, type-check, check the direction of imports
#               (lint-imports, contracts in setup.cfg) and run the whole test suite
#               (on the newest dependencies and Django 5.2; in two pytest
#               processes, -n 2: most end-to-end tests wait on real
#               processes, so two at a time use the two cores of a small
#               machine), then the fast suite again on the lowest supported
#               ones and Django 4.2 (noxfile.py's "lowest" session, in
#               .nox/; plain `nox` runs the whole matrix)
# And `make docs`: the documentation site, warnings as errors, into
# docs/_build/html (tests/test_docs.py builds it too and runs its samples).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: chat test lint venv docs

$(BIN)/.installed: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q '.[test]'
	touch $@

venv: $(BIN)/.installed

chat: venv
	$(BIN)/python -m pip install -q --no-deps --force-reinstall .
	cd examples/chat && ../../$(BIN)/python manage.py migrate -v 0 && \
	  ../../$(BIN)/twistd -n chanserv --settings=chat.settings -p $(PORT)

docs: venv
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	scripts/ensure-system-deps
	$(BIN)/python -m pip install -q --no-deps --force-reinstall .
	$(BIN)/python -m pytest -q -n 2
	$(BIN)/nox -s lowest
