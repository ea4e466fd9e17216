# The README's two commands. A fresh machine needs only Python 3.11+.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench chaos screenshots clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/postupload run

# The Cloudinary SDK's own tests (tests/test_sdk_live.py runs them against the emulator): its source
# distribution, fetched by name for the version installed, as pip fetches any dependency.
SDK_TESTS := var/sdk-tests
$(SDK_TESTS)/.fetched: $(VENV)/.installed-test
	rm -rf $(SDK_TESTS) && mkdir -p $(SDK_TESTS)
	$(BIN)/python -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
		--dest $(SDK_TESTS) "cloudinary==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("cloudinary"))')"
	tar -xzf $(SDK_TESTS)/cloudinary-*.tar.gz -C $(SDK_TESTS) --strip-components=1 --wildcards '*/test/test_*.py'
	touch $@

test: $(VENV)/.installed-test $(SDK_TESTS)/.fetched
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest

bench: $(VENV)/.installed-test
	@for script in bench/e2e.py bench/match.py bench/slow_clients.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done
	@echo "== bench/metrics_cost.py"; $(BIN)/python -m bench.metrics_cost
	@echo "== bench/backfill.py"; $(BIN)/python bench/backfill.py
	@echo "== bench/redis_cost.py"; $(BIN)/python -m bench.redis_cost
	@echo "== bench/redis_memory.py"; $(BIN)/python -m bench.redis_memory
	@echo "== bench/intake.py"; $(BIN)/python -m bench.intake
	@echo "== bench/group_commit.py"; $(BIN)/python -m bench.group_commit
	@echo "== bench/capacity.py"; $(BIN)/python -m bench.capacity

# The console screenshots in docs/operations.md, taken by the console's browser test.
screenshots: $(VENV)/.installed-test
	POSTUPLOAD_SCREENSHOTS=docs/screenshots $(BIN)/pytest -p no:xdist -o addopts= tests/test_console.py -k chromium

chaos: $(VENV)/.installed-test
	$(BIN)/python bench/chaos.py
	$(BIN)/python bench/chaos.py --failover --seeds 1

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
