# Chamberlain developer commands. `make run` and `make test` work on a fresh machine with Python 3.11+, make and node.
VENV     ?= .venv
PYTHON   ?= python3
DATA_DIR ?= .chamberlain
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.installed
TS_DIR   := tests/interop/ts

.PHONY: install run test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

$(TS_DIR)/node_modules/.installed: $(TS_DIR)/package.json $(wildcard $(TS_DIR)/package-lock.json)
	cd $(TS_DIR) && (npm ci --no-audit --no-fund --loglevel=error || npm install --no-audit --no-fund --loglevel=error)
	touch $@

# Initialises the data dir on first use (printing the bootstrap admin's one-time password), then serves with the
# built-in demo MCP server at http://127.0.0.1:8080/mcp/demo.
run: install
	$(VENV)/bin/chamberlain init --data-dir $(DATA_DIR)
	$(VENV)/bin/chamberlain serve --data-dir $(DATA_DIR)

test: install $(TS_DIR)/node_modules/.installed
	$(VENV)/bin/pytest

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

# The MCP proxy bench compares with IBM ContextForge, installed once into bench/.peers/ (needs pyenv's Python 3.12).
bench: install
	bench/peers/install_contextforge.sh
	$(PY) bench/oauth_bench.py
	$(PY) bench/mcp_proxy_bench.py
	$(PY) bench/audit_bench.py
	$(PY) bench/rate_limit_bench.py
	$(PY) bench/policy_bench.py
	$(PY) bench/vault_bench.py
	$(PY) bench/llm_proxy_bench.py
	$(PY) bench/leak_guard_bench.py
	$(PY) bench/dlp_bench.py
	$(PY) bench/console_bench.py
	$(PY) bench/scale_bench.py

clean:
	rm -rf $(VENV) $(TS_DIR)/node_modules .pytest_cache .mypy_cache .ruff_cache
