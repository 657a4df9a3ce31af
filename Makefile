# hubmerge — every target creates/uses .venv; nothing touches the system Python.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The peers (FusionBench, mergekit) live in their own venv, never the project's.
PEERS := .venv-peers
PEERS_STAMP := $(PEERS)/.installed

.PHONY: demo test bench bench-peers bench-eval install clean

# --no-cache-dir: torch's wheels are several GB; a second copy in pip's cache can fill a small disk.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --no-cache-dir --upgrade pip
	$(PY) -m pip install --no-cache-dir -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/hubmerge demo

# One pytest process per core, four at most (each holds its own torch, Gradio and local Hub),
# each test file whole in one of them, so that a file's fixtures are made once (pytest-xdist);
# `make test PYTEST_ARGS=` runs the suite in one process.
PYTEST_ARGS ?= -n auto --maxprocesses 4 --dist loadfile
# pytest exits 5 when it collects no test: not a failure of the code under test.
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS); status=$$?; if [ $$status -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$status

bench: $(STAMP)
	$(PY) benchmarks/bench_merge.py

bench-eval: $(STAMP)
	$(PY) benchmarks/bench_eval.py

$(PEERS_STAMP):
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install --no-cache-dir --upgrade pip
	$(PEERS)/bin/python -m pip install --no-cache-dir 'fusion-bench==0.2.33' 'mergekit==0.1.5'
	touch $(PEERS_STAMP)

# The project venv runs the harness; the peer rows run with $(PEERS)/bin/python.
bench-peers: $(STAMP) $(PEERS_STAMP)
	$(PY) benchmarks/bench_peers.py

clean:
	rm -rf $(VENV) $(PEERS) .pytest_cache build *.egg-info
