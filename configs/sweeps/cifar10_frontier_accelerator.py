"""CIFAR-10 accuracy-vs-MACs frontiers on one accelerator: widths up to 1/2.

  make frontier-accelerator   # lr tuning, then this sweep; both resumable
  python sweep.py --config configs/inception_cifar.py:frontier \
      --sweep configs/sweeps/cifar10_frontier_accelerator.py \
      --workdir results/cifar10_frontier_accelerator \
      --config.dataset=folder:/path/to/cifar10 --config.dtype=bfloat16 \
      --parallel 8

The CPU frontier's families, recipe and protocol
(``configs/sweeps/cifar10_frontier.py``: each family's lr tuned alike on
train[:80%] -> train[80%:90%], three seeds on train[:90%] -> train[90%:],
16-epoch runs at the cheapest width), at three widths per family from
about 22M to 360M MACs per image, where the naive module is no longer
starved at the widest. Its own tuning sweep
(``cifar10_frontier_accelerator_lr.py``): one frontier, one platform.
"""
import dataclasses

from configs.sweeps import cifar10_frontier

# Each family's widths (the naive family's as the bottleneck network's, whose
# MACs it is narrowed to). Separable runs one step wider: ~0.9x the MACs of
# the bottleneck network at each step (22M, 83M, 324M against 23M, 91M, 363M).
WIDTHS = {'bottleneck': (0.125, 0.25, 0.5), 'naive': (0.125, 0.25, 0.5),
          'separable': (0.1875, 0.375, 0.75)}
# Where the tuning sweep's runs are, relative to the repository root.
TUNING_DIR = 'results/cifar10_frontier_accelerator_lr'

FRONTIER = dataclasses.replace(cifar10_frontier.FRONTIER, widths=WIDTHS,
                               tuning_dir=TUNING_DIR)
tuning_runs = FRONTIER.tuning_runs
tuned_learning_rates = FRONTIER.tuned_learning_rates


def get_sweep(config):
  """One dict of overrides per final run: seed-major, long runs last."""
  return FRONTIER.final_runs(config)
