"""Equal compute: the naive network, narrowed until its MACs match the bottleneck one's.

  python sweep.py --config configs/inception_cifar.py:cpu \
      --sweep configs/sweeps/equal_macs.py --workdir runs/equal_macs

The naive width is found from the FLOP accounting (``inception.models.budget``), not
tuned by hand: the naive network whose MACs per image are within 5% of the
bottleneck network's at the config's width. Two variants x three seeds.
"""
from inception.models import budget, flops
from inception.sweeps import sweep
from inception.training import specs

SEEDS = (0, 1, 2)


def equal_macs_width(config) -> tuple[float, int, int]:
  """(naive width, its MACs, the bottleneck network's MACs)."""
  model = specs.model_spec(config)
  name, shape, options = model.name, model.input_shape, model.kwargs
  naive = flops.naive_overrides(name)
  target = budget.macs(name, shape, **{**options, **{k: True for k in naive}})
  width, reached = budget.equal_macs_width(name, shape, {**options, **naive},
                                           target)
  return width, reached, target


def get_sweep(config):
  """Returns one dict of overrides per run."""
  naive = flops.naive_overrides(config.model.name)
  width, _, _ = equal_macs_width(config)
  variants = [
      {**{f'model.{k}': True for k in naive}, 'model.width': config.model.width},
      {**{f'model.{k}': False for k in naive}, 'model.width': width},
  ]
  return sweep.product(variants, sweep.axis('seed', SEEDS))
