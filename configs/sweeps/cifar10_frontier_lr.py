"""The frontier's learning-rate tuning: every family alike, off the final split.

  python sweep.py --config configs/inception_cifar.py:frontier \
      --sweep configs/sweeps/cifar10_frontier_lr.py \
      --workdir results/cifar10_frontier_lr --config.dataset=folder:/tmp/cifar10

Each family of ``configs/sweeps/cifar10_frontier.py`` at its cheapest width,
seed 0, at each peak lr of the grid, trained on train[:80%] and evaluated on
train[80%:90%]; the frontier sweep takes each family's best.
"""
from configs.sweeps import cifar10_frontier


def get_sweep(config):
  """One dict of overrides per tuning run, family by family."""
  return [overrides for _, _, overrides in
          cifar10_frontier.tuning_runs(config)]
