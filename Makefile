# clickserver: `make demo` runs the platform on the embedded defaults, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MANAGE := $(PY) manage.py
DEMO_ENV := DJANGO_DEBUG=1 DJANGO_SECURE_COOKIES=0

.PHONY: system-deps system-deps-dev system-deps-bench install install-dev assets migrate demo test test-faults test-fuzz check lint typecheck worker beat web bench bench-full clean

$(PY): | system-deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

system-deps: ## Debian packages (as root: installed; otherwise the exact apt-get command)
	@PYTHON=$(PYTHON) bash scripts/system_deps.sh

system-deps-dev: ## the same, plus Chromium and ChromeDriver for the browser tests
	@PYTHON=$(PYTHON) bash scripts/system_deps.sh --dev

install: system-deps $(PY) ## runtime dependencies and front-end assets
	$(PY) -m pip install -r requirements.txt
	$(MAKE) assets NPM_CI_FLAGS=--omit=dev

install-dev: system-deps-dev $(PY)
	$(PY) -m pip install -r requirements-dev.txt
	$(MAKE) assets

# devDependencies are the official SDKs the tests drive; `make install` leaves them out.
assets:
	@if [ -f package.json ]; then npm ci --no-audit --no-fund $(NPM_CI_FLAGS); fi

migrate:
	$(DEMO_ENV) $(MANAGE) migrate --noinput

demo: install-dev migrate ## seed a demo shop and run web + worker + beat on the embedded defaults
	$(DEMO_ENV) $(PY) scripts/demo.py

test: install-dev ## the test suite (real services when reachable; REQUIRE_SERVICES=1 to insist)
	$(PY) scripts/run_tests.py

test-faults: install-dev ## only the fault-injection suite (docs/testing.md)
	$(PY) scripts/run_tests.py -m faults -s

test-fuzz: install-dev ## only the fuzzing (docs/testing.md)
	$(PY) scripts/run_tests.py -m fuzz -s

check: install-dev lint typecheck test

lint: ## ruff, and the layering contracts of pyproject.toml [tool.importlinter]
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck:
	DJANGO_DEBUG=1 $(VENV)/bin/mypy $(wildcard */services.py */services/*.py */*/services.py */selectors.py */selectors/*.py */*/selectors.py */tasks.py */sql.py */cache.py) \
		notifications/experiments/exposures.py notifications/experiments/metrics.py \
		notifications/experiments/results.py notifications/experiments/analysis.py \
		notifications/experiments/verdict.py notifications/campaigns/decisions.py \
	notifications/campaigns/rules.py notifications/campaigns/deliveries.py \
	notifications/campaigns/results.py notifications/campaigns/simulation.py \
	notifications/fixed_model.py clickserver/webhook_guard.py

web:
	$(VENV)/bin/gunicorn -c deploy/gunicorn.conf.py clickserver.wsgi

worker:
	$(VENV)/bin/celery -A clickserver worker -l info

beat:
	$(VENV)/bin/celery -A clickserver beat -l info

system-deps-bench:
	@PYTHON=$(PYTHON) bash scripts/system_deps.sh --bench

bench: install-dev system-deps-bench ## the quick benchmarks (bench/README.md)
	$(PY) bench/run.py --quick

bench-full: install-dev system-deps-bench
	$(PY) bench/run.py --full

clean:
	rm -rf var staticfiles
