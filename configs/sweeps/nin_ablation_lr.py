"""The NiN ablation's learning-rate tuning: both families alike, off the final split.

  python sweep.py --config configs/nin_cifar.py:ablation \
      --sweep configs/sweeps/nin_ablation_lr.py \
      --workdir results/nin_ablation_lr --config.dataset=folder:/tmp/cifar10

Each family of ``configs/sweeps/nin_ablation.py`` at its cheapest width,
seed 0, at each peak lr of its grid, trained on train[:80%] and evaluated
on train[80%:90%]; the ablation sweep takes each family's best.
"""
from configs.sweeps import nin_ablation


def get_sweep(config):
  """One dict of overrides per tuning run, family by family."""
  return [overrides for _, _, overrides in nin_ablation.tuning_runs(config)]
