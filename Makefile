# Fresh clone -> working environment in one command: `make test` or `make demo`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install install-gpu install-tpu test demo flops clean ablation frontier frontier-accelerator nin-ablation memcheck

$(STAMP): requirements.txt requirements-common.txt requirements-test.txt requirements-cluster.txt \
    constraints.txt pyproject.toml onednn/setup.py onednn/pyproject.toml \
    $(wildcard onednn/csrc/*)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check \
	    -r requirements.txt -r requirements-test.txt -r requirements-cluster.txt \
	    -c constraints.txt
	# The package itself is pure Python: no compiler needed.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	# The optional oneDNN kernels (x86-64 Linux), built against the venv's
	# jaxlib and oneDNN headers, hence no build isolation.
	if [ "$$(uname -sm)" = "Linux x86_64" ]; then \
	    $(PY) -m pip install --quiet --disable-pip-version-check --no-deps \
	        --no-build-isolation ./onednn; fi
	touch $(STAMP)

install: $(STAMP)

# Accelerators: the same jax, jaxlib and flax pins with the platform's
# plugin, no oneDNN (and no compiler needed). Run on the GPU or TPU host.
install-gpu install-tpu: install-%:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check \
	    -r requirements-$*.txt -c constraints.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	$(PY) -c "import jax; print(jax.devices())"

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

# CIFAR-10 for the published sweeps: TFDS's cifar10 by default (downloaded
# where there is a network), or CIFAR10=/path/to/folder, an image tree
# <split>/<class>/<image> (e.g. the JPEG copy the published runs used, which
# a resume of them needs: another dataset is another run).
CIFAR10 ?=
DATASET := $(if $(CIFAR10),folder:$(abspath $(CIFAR10)),cifar10)
# After a sweep's exit status 2 (a user error, e.g. no dataset), the two ways
# to give it CIFAR-10; any other status passes through unchanged.
NO_CIFAR10 = { rc=$$?; [ $$rc -ne 2 ] || echo "make $@: its CIFAR-10 is TFDS's cifar10, \
    which needs the network once, or an image folder: make $@ CIFAR10=/path/to/folder"; \
    exit $$rc; }

# The CIFAR-10 bottleneck ablation, 4 epochs (configs/sweeps/cifar10_ablation.py):
# resumable, skips finished runs; then the report. About 15 h on a 2-core CPU
# at --parallel 2; 5 min on one H200 at --parallel 8 (results/cifar10_ablation).
ablation: install
	$(PY) sweep.py --config configs/inception_cifar.py:ablation \
	    --sweep configs/sweeps/cifar10_ablation.py --workdir results/cifar10_ablation \
	    --config.dataset=$(DATASET) --parallel 2 || $(NO_CIFAR10)

# The accuracy-vs-MACs frontier: the lr tuning sweep, then the frontier sweep
# with each family's tuned lr (configs/sweeps/cifar10_frontier.py); both
# resumable. 8.8e14 training FLOPs, sized for about 8 CPU-hours; at the rates its
# first runs took on a 2-core CPU (27-99 min each) it needs about 24 hours.
frontier: install
	$(PY) sweep.py --config configs/inception_cifar.py:frontier \
	    --sweep configs/sweeps/cifar10_frontier_lr.py \
	    --workdir results/cifar10_frontier_lr --config.dataset=$(DATASET) || $(NO_CIFAR10)
	$(PY) sweep.py --config configs/inception_cifar.py:frontier \
	    --sweep configs/sweeps/cifar10_frontier.py \
	    --workdir results/cifar10_frontier --config.dataset=$(DATASET) || $(NO_CIFAR10)

# The same frontier on one GPU or TPU host (after make install-gpu or
# install-tpu), widths up to 1/2, bf16 (configs/sweeps/cifar10_frontier_accelerator.py):
# lr tuning, then the final runs, PARALLEL at a time sharing the accelerator;
# both resumable. Not yet run on an accelerator.
PARALLEL ?= 8
frontier-accelerator:
	$(PY) sweep.py --config configs/inception_cifar.py:frontier \
	    --sweep configs/sweeps/cifar10_frontier_accelerator_lr.py \
	    --workdir results/cifar10_frontier_accelerator_lr --config.dataset=$(DATASET) \
	    --config.dtype=bfloat16 --parallel $(PARALLEL) || $(NO_CIFAR10)
	$(PY) sweep.py --config configs/inception_cifar.py:frontier \
	    --sweep configs/sweeps/cifar10_frontier_accelerator.py \
	    --workdir results/cifar10_frontier_accelerator --config.dataset=$(DATASET) \
	    --config.dtype=bfloat16 --parallel $(PARALLEL) || $(NO_CIFAR10)

# The NiN ablation, the same protocol over two NiN families (with and without
# the hidden 1x1 layers; configs/sweeps/nin_ablation.py): lr tuning, then the
# final runs; both resumable. 8 tuning runs (both grids grew once) and 12 final
# runs, 3.6e14 training FLOPs in float32, two at a time on one thread each: about
# 3.3 hours of a 2-core AMD EPYC (6.6 h of run time summed, results/nin_ablation);
# then 6 16-epoch runs at the cheapest width (1.3e14 FLOPs, about 1.3 h more;
# 2.6 h of run time summed). The 16-epoch runs ran at a later commit than the
# rest: the report needs `python report.py results/nin_ablation --allow_mixed`.
nin-ablation: install
	$(PY) sweep.py --config configs/nin_cifar.py:ablation \
	    --sweep configs/sweeps/nin_ablation_lr.py \
	    --workdir results/nin_ablation_lr --config.dataset=$(DATASET) --parallel 2 \
	    || $(NO_CIFAR10)
	$(PY) sweep.py --config configs/nin_cifar.py:ablation \
	    --sweep configs/sweeps/nin_ablation.py \
	    --workdir results/nin_ablation --config.dataset=$(DATASET) --parallel 2 \
	    || $(NO_CIFAR10)

# Every oneDNN handler at small shapes under valgrind's memcheck (~25 min on
# 2 cores); fails on any error inside oneDNN or the handlers.
memcheck: install
	mkdir -p runs
	valgrind --tool=memcheck --smc-check=all-non-file --log-file=runs/memcheck.log \
	    $(PY) tests/memcheck_onednn.py | tee -a runs/memcheck.log
	$(PY) tests/memcheck_onednn.py --check runs/memcheck.log
