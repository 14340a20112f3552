"""The accelerator frontier's learning-rate tuning, off the final split.

  python sweep.py --config configs/inception_cifar.py:frontier \
      --sweep configs/sweeps/cifar10_frontier_accelerator_lr.py \
      --workdir results/cifar10_frontier_accelerator_lr \
      --config.dataset=folder:/path/to/cifar10 --config.dtype=bfloat16 \
      --parallel 8

Each family of ``cifar10_frontier_accelerator.py`` at its cheapest width,
seed 0, at each peak lr of its grid (grown past a winning edge), trained on
train[:80%] and scored on train[80%:90%].
"""
from configs.sweeps import cifar10_frontier_accelerator


def get_sweep(config):
  """One dict of overrides per tuning run, family by family."""
  return [overrides for _, _, overrides in
          cifar10_frontier_accelerator.tuning_runs(config)]
