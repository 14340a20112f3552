# Fresh clone -> working environment in one command: `make test` or `make demo`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test demo flops clean

$(STAMP): requirements.txt requirements-test.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check \
	    -r requirements.txt -r requirements-test.txt -c constraints.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q

# The main job on the embedded digits dataset, offline: bottleneck vs naive
# GoogLeNet, two seeds, then the report (table, pareto.png, curves.png).
demo: install
	$(PY) -m inception.flops --config configs/quickstart.py --compare | sed -n '/### side by side/,$$p'
	$(PY) sweep.py --config configs/quickstart.py --sweep configs/sweeps/demo.py \
	    --workdir runs/demo --config.num_epochs=15 --parallel 2

clean:
	rm -rf $(VENV) .pytest_cache
