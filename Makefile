# Everything a fresh machine needs, from a clean checkout:
#   make demo   - a server on the embedded SQLite default, demo events flowing in
#                 (on 127.0.0.1:8400; another port: make demo PORT=8401)
#   make test   - lint and the whole test suite (installs PostgreSQL if missing)
#   make bench  - the benchmarks, JSON on stdout

VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3
PORT ?= 8400

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

.PHONY: install demo test bench
install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/auditfed serve --demo --data auditfed-data --log-format text --listen 127.0.0.1:$(PORT)

test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/pytest

bench: $(BIN)/.installed
	$(BIN)/python -m bench
