"""The `make demo` sweep: bottleneck vs the paper's naive block, two seeds.

  python sweep.py --config configs/quickstart.py \
      --sweep configs/sweeps/demo.py --workdir runs/demo
"""
from inception.sweeps import sweep


def get_sweep(config):
  """Returns one dict of overrides per run."""
  del config
  variants = [{'model.bottleneck': True, 'model.pool_proj': True},
              {'model.bottleneck': False, 'model.pool_proj': False}]
  return sweep.product(variants, sweep.axis('seed', [0, 1]))
