# The README's commands. Every target sets up what it needs, so a fresh clone with Python 3.10+ and
# make is enough: `make test`, `make test-compat`, `make demo`, `make docs`, `make bench`.
PYTHON ?= python3
AIRFLOW_VERSION ?= 3.3.2
AIRFLOW_COMPAT_VERSION ?= 2.11.2
# The last Airflow 3 line that builds the connection form from the hook's methods, not conn-fields.
AIRFLOW_LEGACY_FORM_VERSION ?= 3.1.8

VENV := .venv
COMPAT_VENV := .venv-compat
UV := $(VENV)/bin/uv
PY := $(VENV)/bin/python
COMPAT_PY := $(COMPAT_VENV)/bin/python
LEGACY_FORM_VENV := .venv-form-3.1
CLUSTER_VENV := .venv-cluster
CLUSTER_PY := $(CLUSTER_VENV)/bin/python

CHROMIUM ?= /usr/bin/chromium

# Every Python process of the suites (each Airflow command, sandbox, host and child process) would
# otherwise compile the repository's own modules again where the environment sets this, as many CI
# and container images do; the venvs' packages are compiled at install (scripts/airflow_line.py).
unexport PYTHONDONTWRITEBYTECODE

# Every venv installs Airflow through scripts/airflow_line.py: the line's constraints/airflow-X.Y.txt
# (upper bounds on dependencies whose new releases broke it), then a check that Airflow reads a
# connection from an AIRFLOW_CONN_* variable, which fails loudly, naming the line and the file to
# add a bound to, when the next new release breaks an old line. `line_constraints` lists the file
# (if the line has one) so that a changed constraint reinstalls the venv.
INSTALL_LINE := $(PY) scripts/airflow_line.py
line_constraints = $(wildcard constraints/airflow-$(word 1,$(subst ., ,$1)).$(word 2,$(subst ., ,$1)).txt)

.PHONY: setup setup-compat redis-server test test-compat test-lines test-ui test-cluster lint typecheck pytest demo docs bench dist clean

# uv resolves and installs Airflow's ~140 packages in seconds instead of minutes; it is a dev tool
# only, bootstrapped into the venv with the interpreter's own pip.
$(UV):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip uv

$(VENV)/.stamp-$(AIRFLOW_VERSION): pyproject.toml $(call line_constraints,$(AIRFLOW_VERSION)) | $(UV)
	$(INSTALL_LINE) --python $(PY) --airflow $(AIRFLOW_VERSION) -e ".[sandbox,test,docs,redis]"
	rm -f $(VENV)/.stamp-* && touch $@

$(COMPAT_VENV)/.stamp-$(AIRFLOW_COMPAT_VERSION): pyproject.toml $(call line_constraints,$(AIRFLOW_COMPAT_VERSION)) | $(UV)
	$(UV) venv --quiet --allow-existing --python $(PY) $(COMPAT_VENV)
	$(INSTALL_LINE) --python $(COMPAT_PY) --airflow $(AIRFLOW_COMPAT_VERSION) -e ".[sandbox,test,redis]"
	rm -f $(COMPAT_VENV)/.stamp-* && touch $@

setup: $(VENV)/.stamp-$(AIRFLOW_VERSION)
setup-compat: $(COMPAT_VENV)/.stamp-$(AIRFLOW_COMPAT_VERSION)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check airflow_provider_qmatic

typecheck: setup
	$(VENV)/bin/mypy

# tests/cluster start a real redis-server (Debian's package) on a free loopback port per session.
redis-server:
	@command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

# The suites run in three processes (pytest-xdist), a test file each at a time: module fixtures (one
# sandbox, one set of example runs) stay in one process, and each process has its own AIRFLOW_HOME
# (tests/conftest.py). Three on two cores, because a third of the suite's time is spent waiting
# (on paced requests, on child processes, on Redis deadlines): two processes left about a third of
# the CPU idle. PYTEST_PARALLEL= runs them in one process.
PYTEST_PARALLEL ?= -n 3 --dist loadfile

pytest: setup redis-server
	$(PY) -m pytest --ignore=tests/ui $(PYTEST_PARALLEL) $(PYTEST_ARGS)

# Lint and the type check run beside the suite (they take seconds of CPU, the suite leaves some
# idle); -Oline keeps each line of their output whole.
test: setup
	$(MAKE) --no-print-directory -j3 -Oline lint typecheck pytest

# On Airflow 2.11, the tests marked `airflow` (those that run Airflow or read its connections; the
# rest never import Airflow and the two venvs share their dependencies' versions, so they would
# prove nothing new there; tests/test_airflow_marker.py keeps the markers honest).
test-compat: setup-compat redis-server
	$(COMPAT_PY) -m pytest --ignore=tests/ui -m airflow $(PYTEST_PARALLEL) $(PYTEST_ARGS)

# Every supported Airflow line (2.11, 3.0, 3.1, 3.2, 3.3; Python 3.10 to 3.13), one venv each:
# install under the line's constraints with the connection check (scripts/airflow_line.py),
# provider registration, the CLI connection test and `airflow dags test` of an example
# against the sandbox, metrics included (the tests marked `lines`; about 5 minutes on 2 cores),
# each `airflow` command a real console-script process (make test forks them from one import:
# tests/airflow_cli.py).
# QMATIC_LINES="3.2.2=3.12" runs a subset.
test-lines: setup
	$(PY) scripts/test_lines.py $(PYTEST_ARGS)

# The main job on the embedded default: the sandbox, a throwaway Airflow home, the three bulk DAGs.
demo: setup
	$(PY) scripts/demo.py

# Benchmarks against the sandbox, side by side with naive baselines (about 3 minutes on 2 cores):
# prints a table and writes benchmarks/results.md, which docs/performance.md reproduces.
bench: setup redis-server
	$(PY) -m benchmarks.run $(BENCH_ARGS)

docs: setup
	$(VENV)/bin/mkdocs build --strict --site-dir site

# The connection form in a real browser: tests/ui starts `airflow api-server` (its own AIRFLOW_HOME,
# SQLite, simple auth manager), then Airflow 2.11's `airflow webserver`, and drives Debian's headless
# Chromium through Playwright. Installing Chromium needs root (CI runs as root).
test-ui: setup setup-compat
	@test -x $(CHROMIUM) || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	$(INSTALL_LINE) --python $(PY) --airflow $(AIRFLOW_VERSION) -e ".[ui]"
	QMATIC_UI_TESTS=1 QMATIC_CHROMIUM=$(CHROMIUM) $(PY) -m pytest tests/ui -q $(PYTEST_ARGS)
	@echo "== the classic form and its Test button in Airflow $(AIRFLOW_COMPAT_VERSION)'s webserver"
	$(INSTALL_LINE) --python $(COMPAT_PY) --airflow $(AIRFLOW_COMPAT_VERSION) -e ".[ui]"
	QMATIC_UI_TESTS=1 QMATIC_CHROMIUM=$(CHROMIUM) $(COMPAT_PY) -m pytest tests/ui -q $(PYTEST_ARGS)
	@echo "== the same form metadata from Airflow $(AIRFLOW_LEGACY_FORM_VERSION)'s API server (hook-method path)"
	$(UV) venv --quiet --allow-existing --python $(PY) $(LEGACY_FORM_VENV)
	$(INSTALL_LINE) --python $(LEGACY_FORM_VENV)/bin/python --airflow $(AIRFLOW_LEGACY_FORM_VERSION) -e ".[sandbox,test]"
	QMATIC_UI_TESTS=1 $(LEGACY_FORM_VENV)/bin/python -m pytest tests/ui -q -k hook_meta $(PYTEST_ARGS)

# A real CeleryExecutor cluster on this machine (docs/cluster-tests.md): Redis and PostgreSQL from
# Debian (installed when missing; needs root, as CI runs), an Airflow scheduler, dag-processor and
# API server, two Celery workers as two hosts, the sandbox; one worker is killed mid-task. Its own
# venv, so the Celery, Redis and Postgres providers never leak into the plain test runs.
test-cluster: setup redis-server
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
	$(UV) venv --quiet --allow-existing --python $(PY) $(CLUSTER_VENV)
	$(INSTALL_LINE) --python $(CLUSTER_PY) --airflow $(AIRFLOW_VERSION) --airflow-extras celery,postgres -e ".[sandbox,test,redis]"
	QMATIC_CLUSTER_TESTS=1 $(CLUSTER_PY) -m pytest tests/cluster/test_celery_cluster.py -q -p no:cacheprovider $(PYTEST_ARGS)

# The sdist and wheel a user installs (`pip install dist/*.whl`): built from a clean dist/, their
# metadata and long description checked as a package index would (twine --strict), then opened to
# check what they ship (licence, example DAGs, py.typed, entry points).
dist: setup
	$(UV) pip install --quiet --python $(PY) -e ".[release]"
	rm -rf dist
	$(UV) build --quiet --out-dir dist
	$(VENV)/bin/twine check --strict dist/*
	$(PY) scripts/check_dist.py dist

clean:
	rm -rf $(VENV) $(COMPAT_VENV) $(LEGACY_FORM_VENV) $(CLUSTER_VENV) .venv-line-* .mypy_cache .ruff_cache .pytest_cache site dist
