"""Equal compute: the naive network, narrowed until its MACs match the bottleneck one's.

  python sweep.py --config configs/inception_cifar.py:cpu \
      --sweep configs/sweeps/equal_macs.py --workdir runs/equal_macs

The naive width is found from the FLOP accounting (inception.flops), not
tuned by hand: the widest naive network whose MACs per image are within 5% of
the bottleneck network's at the config's width. Two variants x three seeds.
"""
from inception import build, flops, sweep

SEEDS = (0, 1, 2)
TOLERANCE = 0.05


def _macs(config, **options) -> int:
  return flops.analyze(build.model(config, **options),
                       build.input_shape(config), xla=False).macs


def equal_macs_width(config) -> tuple[float, int, int]:
  """(naive width, its MACs, the bottleneck network's MACs)."""
  naive = flops.naive_overrides(config.model.name)
  target = _macs(config, **{k: True for k in naive})
  lo, hi = 0.0, config.model.width  # naive MACs grow with width
  for _ in range(16):  # width to 2^-16: finer than one channel
    mid = (lo + hi) / 2
    if _macs(config, width=mid, **naive) > target:
      hi = mid
    else:
      lo = mid
  # Channel counts are integers: take whichever side lands closer.
  best = min((lo, hi), key=lambda w: abs(_macs(config, width=w, **naive) - target))
  macs = _macs(config, width=best, **naive)
  if abs(macs - target) > TOLERANCE * target:
    raise ValueError(f'no naive width within {TOLERANCE:.0%} of {target:,} '
                     f'MACs (closest: width {best:.4f}, {macs:,})')
  return round(best, 6), macs, target


def get_sweep(config):
  """Returns one dict of overrides per run."""
  naive = flops.naive_overrides(config.model.name)
  width, _, _ = equal_macs_width(config)
  variants = [
      {**{f'model.{k}': True for k in naive}, 'model.width': config.model.width},
      {**{f'model.{k}': False for k in naive}, 'model.width': width},
  ]
  return sweep.product(variants, sweep.axis('seed', SEEDS))
