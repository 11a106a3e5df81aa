# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-compat lint install chromium web app clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: 2.13.0 is a local CPU wheel here; an unpinned torch would pull a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,app]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

# The browser test of the demo app drives Debian's headless Chromium.
chromium:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium chromium-driver)

# The in-browser page's npm packages (onnxruntime-web, pinned by app/web/package-lock.json); redone only when the lock
# file changes.
WEB_STAMP := app/web/node_modules/.package-lock.json
$(WEB_STAMP): app/web/package-lock.json
	npm ci --prefix app/web --no-audit --no-fund --loglevel=error
	touch $(WEB_STAMP)

web: $(WEB_STAMP)

# Two pytest-xdist workers (one torch thread each, see tests/conftest.py): much of the suite waits on single-threaded
# work (imports, subprocesses, the browser), so the second core would otherwise idle. --dist loadscope keeps each
# module (and each test class) on one worker, so module-scoped fixtures are built once.
test: $(STAMP) chromium web
	$(PY) -m pytest -q -n 2 --dist loadscope --durations=25 tests

# The Hub-shipped model code on transformers 4.57.6 (the last 4.x), the floor and the newest 5.x, in cached venvs
# (.venv-compat/<version> over one shared torch in .venv-compat/base, created on first use), plus the parity tests
# on the floor (tests/compat_check.py).
test-compat: $(STAMP)
	$(PY) tests/compat_check.py

app: $(STAMP)
	$(PY) app/app.py --host 127.0.0.1 --port 7860

clean:
	rm -rf $(VENV) outputs .venv-compat .cache-compat .cache/transformers-tests

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
