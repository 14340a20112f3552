"""Bottleneck ablation: 1x1 reductions on/off and the paper's naive block, over seeds.

  python sweep.py --config configs/inception_cifar.py:cpu \
      --sweep configs/sweeps/bottleneck_ablation.py --workdir runs/ablation

Three variants x three seeds. For NiN configs (no pool_proj option) the
variants are the mlpconv 1x1 layers on and off.
"""
from inception.sweeps import sweep

SEEDS = (0, 1, 2)


def get_sweep(config):
  """Returns one dict of overrides per run."""
  if 'pool_proj' in config.model:
    variants = [
        {'model.bottleneck': True, 'model.pool_proj': True},   # GoogLeNet
        {'model.bottleneck': False, 'model.pool_proj': True},  # no reductions
        {'model.bottleneck': False, 'model.pool_proj': False},  # naive, Fig. 2a
    ]
  else:
    variants = sweep.axis('model.bottleneck', [True, False])
  return sweep.product(variants, sweep.axis('seed', SEEDS))
