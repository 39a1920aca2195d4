# Two commands for a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.babysit-installed
PYTHON ?= python3

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: pip takes 2.13.0 from the CPU build on disk (a looser pin pulls CUDA)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,postgres,ray]'
	touch $(STAMP)

install: $(STAMP)

BUDGET ?= 10

demo: $(STAMP)
	# the notes' recipe end to end on MNIST-1D with the paper's CNN, in about BUDGET minutes (make demo BUDGET=2)
	rm -rf runs/demo
	$(VENV)/bin/babysit recipe examples/mnist1d_cnn.toml --minutes $(BUDGET) --dir runs/demo

test: $(STAMP)
	# the report's browser test drives headless Chromium (Debian's packages; CI runs as root)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -q && apt-get install -y -q chromium chromium-driver)
	# a real PostgreSQL for the cluster tests (tests/pg.py starts it as the postgres user, on 127.0.0.1)
	command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		(apt-get update && apt-get install -y postgresql)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(PY) -m pytest

clean:
	rm -rf $(VENV) runs build dist src/*.egg-info
