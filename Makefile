# RasPy: `make start` runs the house, `make tests` runs the tests (and builds
# the docs), `make docs` builds the docs. Each creates .venv on first use and
# installs RasPy into it, so on a fresh machine each is the whole set-up.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: develop install uninstall tests devtests docs start bench browser graphviz mosquitto clean

$(STAMP): setup.py pyproject.toml $(wildcard raspy/mdp/_fast/*.pyx raspy/mdp/_fast/*.pxd)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet "Cython>=3" "pyzmq>=25"
	$(PY) -m pip install --quiet --no-build-isolation -e ".[dev]"
	touch $(STAMP)

develop: $(STAMP)

install:
	$(PYTHON) -m pip install .

uninstall:
	$(PYTHON) -m pip uninstall -y raspy

tests: $(STAMP) browser mosquitto docs
	$(PY) -m pytest $(PYTEST_ARGS)

# The docs: Markdown in docs/, HTML in docs/_build/html, built whole each time
# (-E -a: a warning of a page that did not change is not hidden). Every warning is an
# error (-W), all of them are reported (--keep-going), and every reference must
# resolve (-n). The architecture picture needs Graphviz's dot.
docs: $(STAMP) graphviz
	@command -v dot >/dev/null 2>&1 || { echo "error: Graphviz's dot is missing: the docs cannot be built (apt-get install graphviz)" >&2; exit 1; }
	$(PY) -m sphinx -E -a -W --keep-going -n -q -b html docs docs/_build/html

devtests: $(STAMP) browser mosquitto
	$(PY) -m coverage run --source raspy -m pytest $(PYTEST_ARGS)
	$(PY) -m coverage report -m

start: $(STAMP)
	$(VENV)/bin/raspy start

bench: $(STAMP) mosquitto
	$(PY) -m pytest bench --benchmark-only -q
	$(PY) -m bench.throughput --out bench/results --repeat 3
	$(PY) bench/kv_throughput.py --updates 20000 --subscribers 10 --rounds 3 | tee bench/results/kv.txt
	$(PY) bench/titanic.py --rounds 3 | tee bench/results/titanic.txt
	$(PY) bench/supervisor.py --kills 20 | tee bench/results/supervisor.txt
	$(PY) bench/web.py | tee bench/results/web.txt
	$(PY) bench/history.py --rounds 3 | tee bench/results/history.txt
	$(PY) bench/idle.py | tee bench/results/idle.txt
	$(PY) bench/mqtt.py | tee bench/results/mqtt.txt

# Headless Chromium for the status page's browser test; installed when we
# are root with apt-get (as CI is), skipped quietly elsewhere.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "chromium could not be installed; the browser test will skip"; \
	  else echo "chromium missing and not root: the browser test will skip"; fi; }

# Mosquitto for the MQTT bridge's tests (a real broker; the clients for the
# bench); installed when we are root with apt-get (as CI is), skipped elsewhere.
mosquitto:
	@{ command -v mosquitto || test -x /usr/sbin/mosquitto; } >/dev/null 2>&1 && command -v mosquitto_pub >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients >/dev/null) \
	      || echo "mosquitto could not be installed; the MQTT tests will skip"; \
	  else echo "mosquitto missing and not root: the MQTT tests will skip"; fi; }

# Graphviz's dot draws the architecture picture; installed like chromium. When it
# cannot be, the docs build stops and says so (docs/conf.py).
graphviz:
	@command -v dot >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null) \
	      || echo "graphviz could not be installed; the docs build will stop"; \
	  else echo "graphviz (dot) missing and not root: install it (apt-get install graphviz) to build the docs"; fi; }

clean:
	rm -rf build dist *.egg-info .pytest_cache .benchmarks .coverage htmlcov docs/_build
	find raspy -name '*.so' -delete
	find raspy/mdp/_fast -name '*.c' -delete
	find . -name __pycache__ -prune -exec rm -rf {} +
