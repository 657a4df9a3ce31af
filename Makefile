# hubmerge — every target creates/uses .venv; nothing touches the system Python.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-peers install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/hubmerge demo

# pytest exits 5 when it collects no test: not a failure of the code under test.
test: $(STAMP)
	$(PY) -m pytest; status=$$?; if [ $$status -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$status

bench: $(STAMP)
	$(PY) benchmarks/bench_merge.py

bench-peers: $(STAMP)
	$(PY) benchmarks/bench_peers.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
