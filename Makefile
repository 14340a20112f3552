# Fresh clone -> working environment in one command: `make test` or `make demo`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test demo flops clean ablation frontier memcheck

$(STAMP): requirements.txt requirements-test.txt requirements-cluster.txt constraints.txt pyproject.toml \
    setup.py $(wildcard inception/csrc/*)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check \
	    -r requirements.txt -r requirements-test.txt -r requirements-cluster.txt \
	    -c constraints.txt
	# No build isolation: setup.py builds the oneDNN kernels against the
	# venv's jaxlib and oneDNN headers.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps \
	    --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q

# The main job on the embedded digits dataset, offline: bottleneck vs naive
# GoogLeNet, two seeds, then the report (table, pareto.png, curves.png).
demo: install
	$(PY) flops.py --config configs/quickstart.py --compare | sed -n '/### side by side/,$$p'
	$(PY) sweep.py --config configs/quickstart.py --sweep configs/sweeps/demo.py \
	    --workdir runs/demo --config.num_epochs=15 --parallel 2

clean:
	rm -rf $(VENV) .pytest_cache

# The CIFAR-10 bottleneck ablation (configs/sweeps/cifar10_ablation.py):
# resumable, skips finished runs; then the report. About 15 h on a 2-core CPU
# at --parallel 2; 5 min on one H200 at --parallel 8 (results/cifar10_ablation).
CIFAR10 ?= /tmp/cifar10
CIFAR10_TAR ?= ../shared/data/cifar10-jpeg-train.tar.gz
ABLATION := results/cifar10_ablation

$(CIFAR10)/train:
	mkdir -p $(CIFAR10) && tar xzf $(CIFAR10_TAR) -C $(CIFAR10)

ablation: install $(CIFAR10)/train
	$(PY) sweep.py --config configs/inception_cifar.py:ablation \
	    --sweep configs/sweeps/cifar10_ablation.py --workdir $(ABLATION) \
	    --config.dataset=folder:$(CIFAR10) --parallel 2

# Every oneDNN handler at small shapes under valgrind's memcheck (~25 min on
# 2 cores); fails on any error inside oneDNN or the handlers.
memcheck: install
	mkdir -p runs
	valgrind --tool=memcheck --smc-check=all-non-file --log-file=runs/memcheck.log \
	    $(PY) tests/memcheck_onednn.py | tee -a runs/memcheck.log
	$(PY) tests/memcheck_onednn.py --check runs/memcheck.log
