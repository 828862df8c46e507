# The two commands a newcomer needs: `make run` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# Serve the seed's example config on SQLite (./data) at 127.0.0.1:8200.
run: install
	$(BIN)/kms-service serve --config deploy/services.example.yaml --data-dir ./data --host 127.0.0.1 --port 8200

lint: install
	$(BIN)/ruff check .

# The whole suite, on SQLite and on PostgreSQL (KMS_TEST_POSTGRES_URL, default the local server's `test` db).
test: install lint
	$(BIN)/pytest

bench: install
	$(BIN)/python bench/transit_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
