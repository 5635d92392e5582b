# modelhub: `make demo` sets everything up and runs the lifecycle; `make test` runs the suite.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_FLAGS := --quiet --disable-pip-version-check --no-warn-script-location

.PHONY: install demo test test-fast lint bench clean browser

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) -r requirements.txt 2>&1 | grep -v "is ignored: it is neither" || true
	$(PY) -c "import django, torch, onnxruntime, celery" 
	touch $@

# The JavaScript runtimes (onnxruntime-node, onnxruntime-web) and axe-core, pinned by package-lock.json.
node_modules/.installed: package.json package-lock.json .npmrc
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed node_modules/.installed

demo: install
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py demo

# The browser tests drive Debian's chromium (never a downloaded browser): installed here when it
# is missing and we are root; otherwise those tests fail with a message saying to install it.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ ! -x "$(CHROMIUM)" ] && [ "$$(id -u)" = "0" ]; then \
		apt-get install -y chromium || (apt-get update && apt-get install -y chromium); \
	elif [ ! -x "$(CHROMIUM)" ]; then \
		echo "chromium is missing: run 'sudo apt-get install -y chromium' (the browser tests need it)"; \
	fi

# Tests run with the development settings (DEBUG=1) unless told otherwise; production settings
# are checked by a test that runs `manage.py check --deploy` in a subprocess.
test: install browser
	$(VENV)/bin/ruff check .
	DEBUG=$${DEBUG:-1} $(PY) -m pytest

# Everything but the tests marked slow (whole jobs, sandboxed children, real workers, servers, the
# browser), in under three minutes; the sample models are built once into var/test-samples and reused.
test-fast: install
	$(VENV)/bin/ruff check .
	DEBUG=$${DEBUG:-1} MODELHUB_TEST_SAMPLES=$(CURDIR)/var/test-samples $(PY) -m pytest -m "not slow"

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) bench/passes.py
	$(PY) bench/variants.py
	$(PY) bench/stability.py
	$(PY) bench/nightly_detector.py
	$(PY) bench/serving.py
	$(PY) bench/targets.py

clean:
	rm -rf var .pytest_cache .ruff_cache
