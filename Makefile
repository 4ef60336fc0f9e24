# The two commands are `make run` and `make test`; each sets itself up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
REGISTRY ?= models/registry
EXAMPLES := $(REGISTRY)/iris/1.0.0/manifest.json $(REGISTRY)/breast-cancer/1.0.0/manifest.json \
            $(REGISTRY)/scam-email/1.0.0/manifest.json
CODE := api shared worker models tools tests bench client

.PHONY: run test lint models redis browser promtool scale-up scale-down clean test-containers k8s-check bench bench-quick

$(BIN)/.installed: requirements/*.txt client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements/dev.txt
	$(BIN)/pip install --quiet -e './client[pandas]'
	touch $@

$(EXAMPLES) &: $(BIN)/.installed models/train.py worker/publishing.py worker/conversion.py \
              worker/reference.py models/data/emails.csv
	$(BIN)/python -m models.train --registry $(REGISTRY)

models: $(EXAMPLES)

# A private redis-server is started by `make run` and the tests; this only installs the programs
# (redis-sentinel for the failover drill, tests/integration/test_failover.py, and benchmark F).
redis:
	@command -v redis-server >/dev/null && command -v redis-sentinel >/dev/null || { \
	  echo "installing redis-server and redis-sentinel from Debian's packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-sentinel >/dev/null; }

# The /docs page and the web app are tested in a real headless Chromium (the app through chromedriver).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing chromium and chromium-driver from Debian's packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

# The monitoring tests check the metrics, alert rules and configs with promtool and scrape the API
# with a real Prometheus of their own on a free port: Debian's prometheus package has both programs.
promtool:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  echo "installing prometheus and promtool from Debian's packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    prometheus >/dev/null; }

run: $(BIN)/.installed models redis
	$(BIN)/python -m tools.run

lint: $(BIN)/.installed
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy

# The test files run in parallel processes, each file whole in one (tests/scheduling.py): the tests
# mostly wait on the service's processes, so more processes than cores pays. TEST_PROCESSES=0: one.
TEST_PROCESSES ?= 3

test: $(BIN)/.installed redis browser promtool lint
	$(BIN)/pytest -n $(TEST_PROCESSES) $(PYTEST_ARGS)

# The container stack end to end: builds the images, runs docker-compose.yml, scales the workers
# to 3 and back with jobs in flight, checks Flower. Docker if an engine answers, else podman with
# local stand-ins of the base images (needs root). About 5 minutes from a cold cache.
test-containers: $(BIN)/.installed
	CONTAINERS_TEST=1 $(BIN)/pytest tests/containers $(PYTEST_ARGS)

# Render deploy/k8s with kubectl kustomize and validate it against the Kubernetes and KEDA schemas.
k8s-check:
	$(PYTHON) tools/k8s_check.py

# Every benchmark workload (L, W1-W4, S streams, P publish) on a private stack on loopback: one JSON document.
bench: $(BIN)/.installed models redis
	$(BIN)/python -m bench --out bench/results/bench.json

# A few seconds a workload, for CI: fails if a job is lost or errors pass 0.1 %, whatever the speed.
bench-quick: $(BIN)/.installed models redis
	$(BIN)/python -m bench --quick --out bench/results/bench-quick.json

scale-up:
	kill -USR1 $$(cat .run/stack.pid)

scale-down:
	kill -USR2 $$(cat .run/stack.pid)

clean:
	rm -rf $(VENV) $(REGISTRY) .run .mypy_cache .ruff_cache .pytest_cache
