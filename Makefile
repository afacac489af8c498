# The two commands of the README, each doing its own set-up.
#   make demo   virtualenv + pinned install + post_install.py + the local swarm
#   make test   the same set-up + test dependencies (pytest, pm2 from npm) + the test suite
#   make demo-multimodal   the local swarm on the multimodal mm-tiny preset (shapes captions)
#   make test-slow / make bench   soak tests and benchmark figures (docs/benchmarks.md; bench
#                                 also measures the defences' cost and the averager's DHT
#                                 requests, each in one process)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
PYTEST_ARGS ?=
TEST_WORKERS ?= 2

.PHONY: demo demo-multimodal test test-slow bench bench-multimodal install clean

# pip byte-compiles each package after installing it, one file at a time: 34 of the 54 s the
# pinned install took here. compileall does the same work on every core (23 s on 2 cores); its
# exit status is ignored as pip ignores it (torch ships a test file only Python 3.12 parses).
# It skips what no hivetrain process imports: the packages' own test folders and transformers'
# ~400 other model families (5,600 of 16,000 files; 22 s instead of 39 s here). A module skipped
# but imported after all still loads, compiled in memory as it is imported.
COMPILE_SKIP := site-packages/(.+/tests?/|transformers/models/(?!(auto|gpt2|encoder_decoder)/|__init__\.py))
$(VENV)/.installed: requirements.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile -r requirements.txt
	$(PY) -m pip install --quiet --no-compile --no-deps -e .
	$(PY) -m compileall -qq -j0 -x '$(COMPILE_SKIP)' "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" || true
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# pm2 pinned in package.json, installed into the project's own node_modules (the auto-updater
# tests drive a real pm2 daemon).
node_modules/.bin/pm2: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed
	$(PY) post_install.py

demo: install
	$(PY) -m hivetrain swarm --swarm.dir runs/demo $(ARGS)

demo-multimodal: install
	$(PY) -m hivetrain swarm --swarm.dir runs/demo-multimodal --model.preset mm-tiny \
		--data.seq_len 32 $(ARGS)

# Two pytest-xdist workers, one per core here, each taking whole modules (a module's subnet is
# shared by its tests), longest first (tests/conftest.py); TEST_WORKERS=1 runs them one at a time.
# Timings and the loaded runs behind this default: docs/benchmarks.md, "The test suite's time".
test: $(VENV)/.installed-dev node_modules/.bin/pm2
	$(PY) -m pytest -m "not slow" -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder \
		$(PYTEST_ARGS)

test-slow: $(VENV)/.installed-dev
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(PY) bench/low_communication.py $(ARGS)
	$(PY) bench/defence_cost.py
	$(PY) bench/dht_requests.py

bench-multimodal: $(VENV)/.installed
	$(PY) bench/multimodal_caption.py $(ARGS)

clean:
	rm -rf $(VENV) runs *.egg-info
