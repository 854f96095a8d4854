# The two commands a newcomer needs: `make run` and `make test`. Both install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint format install browser bench reliability streams abuse hosts fuzz clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11 or newer is needed (found $$($(PYTHON) --version))"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,keras]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m service.stack

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Test peers from Debian's packages, installed on first use: Chromium for the dashboard's browser
# test (Playwright cannot download its own here), nginx for the reverse-proxy test.
APT_INSTALL = SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); export DEBIAN_FRONTEND=noninteractive; \
	$$SUDO apt-get install -y -q $(1) || { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q $(1); }
CHROMIUM ?= /usr/bin/chromium
NGINX ?= /usr/sbin/nginx
$(CHROMIUM):
	@echo "Installing Debian's chromium for the dashboard's browser test"
	@$(call APT_INSTALL,chromium)
$(NGINX):
	@echo "Installing Debian's nginx-light for the reverse-proxy test (deploy/nginx.conf)"
	@$(call APT_INSTALL,nginx-light)

browser: $(CHROMIUM)

test: lint $(CHROMIUM) $(NGINX)
	$(PY) -m pytest

# Speed and accuracy figures (not tests): prints each benchmark's table with its targets.
bench: $(STAMP)
	$(PY) -m benchmarks.seed_job
	$(PY) -m benchmarks.large_job
	$(PY) -m benchmarks.predict_http
	$(PY) -m benchmarks.predict_breakdown
	$(PY) -m benchmarks.onnx_runtime
	$(PY) -m benchmarks.job_overhead
	$(PY) -m benchmarks.memory
	$(PY) -m benchmarks.checkpoints
	$(PY) -m benchmarks.takeover
	$(PY) -m benchmarks.sweep

# Heavier failure scenarios against real processes: one line of figures per scenario.
reliability: $(STAMP)
	$(PY) -m tests.reliability

# Open event streams at a larger size than the test suite's 500 (one line of figures).
streams: $(STAMP)
	$(PY) -m tests.streams --streams $${STREAMS:-2000}

# Schemathesis over /openapi.json at full size (200 generated requests per operation).
# A careless or hostile tenant against a real stack (SQLite and PostgreSQL): one line per case.
abuse: $(STAMP)
	$(PY) -m tests.abuse

# Several hosts in network namespaces (a data host with its own PostgreSQL and Redis, an API host,
# two worker hosts): every failure scenario at full size, one line of figures each. Needs root and
# `ip netns`; the short form runs in make test (tests/hosts/test_hosts.py).
hosts: $(STAMP)
	$(PY) -m tests.hosts

fuzz: $(STAMP)
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-200} $(PY) -m pytest tests/unit/test_fuzz.py -q

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
