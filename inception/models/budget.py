"""Compute budgets between variants: equal-MACs widths and per-branch widths.

The naive Inception module (Fig. 2a) costs about 10x the MACs of Table 1's at
the same widths, so comparing accuracy at equal compute means narrowing it.
``equal_macs_width`` finds that width by bisection on the FLOP accounting (no
hand tuning); ``describe`` shows what the narrowed network is, branch by
branch, so a degenerate arm (branches of one or two channels) is visible.
"""
import dataclasses
import functools

from inception import models
from inception.models import flops

TOLERANCE = 0.05  # |reached - target| / target allowed for an equal-MACs arm.
DEGENERATE_CHANNELS = 2  # A branch this narrow or narrower is degenerate.


def macs(model_name: str, input_shape, **options) -> int:
  """Inference MACs per image of a registered model with ``options``."""
  return _macs(model_name, tuple(input_shape), tuple(sorted(options.items())))


@functools.lru_cache(maxsize=4096)
def _macs(model_name: str, input_shape, options) -> int:
  # Bisections and sweep files ask for the same widths again and again.
  return flops.analyze(models.get_model(model_name, **dict(options)),
                       input_shape, xla=False, trace_training=False).macs


def equal_macs_width(model_name: str, input_shape, options: dict,
                     target: int) -> tuple[float, int]:
  """The width at which ``model_name`` with ``options`` costs ``target`` MACs.

  Bisects the width (MACs grow with it) to 2^-16, then takes whichever side
  of the integer channel counts lands closer to the target.

  Returns:
    (width, MACs per image reached at that width).

  Raises:
    ValueError: no width comes within ``TOLERANCE`` of the target.
  """
  cost = lambda w: macs(model_name, input_shape, **{**options, 'width': w})
  narrowest = 2.0**-16  # the bisection's resolution
  if cost(narrowest) > (1 + TOLERANCE) * target:  # out of reach: say so now
    raise ValueError(f'no width of {model_name} within {TOLERANCE:.0%} of '
                     f'{target:,} MACs (closest: width {narrowest:.4f}, '
                     f'{cost(narrowest):,})')
  lo, hi = 0.0, 1.0
  while cost(hi) < target:
    hi *= 2
  for _ in range(16):
    mid = (lo + hi) / 2
    if cost(mid) > target:
      hi = mid
    else:
      lo = mid
  best = min((lo, hi), key=lambda w: abs(cost(w) - target))
  reached = cost(best)
  if abs(reached - target) > TOLERANCE * target:
    raise ValueError(f'no width of {model_name} within {TOLERANCE:.0%} of '
                     f'{target:,} MACs (closest: width {best:.4f}, '
                     f'{reached:,})')
  return round(best, 6), reached


@dataclasses.dataclass
class Shape:
  """What one variant is: per-block branch widths, params and MACs."""
  params: int
  macs: int
  branches: dict[str, tuple[int, ...]]  # block -> widths of the live layers
  outputs: dict[str, tuple[int, ...]]  # block -> each branch's output width

  @property
  def narrowest(self) -> tuple[str, int]:
    """(block, channels) of the narrowest branch output over all blocks.

    A branch's output is what it adds to the block's concatenation; the 1x1
    reductions inside a branch are narrow by design and not counted.
    """
    block = min(self.outputs, key=lambda b: min(self.outputs[b]))
    return block, min(self.outputs[block])

  @property
  def degenerate(self) -> bool:
    return bool(self.outputs) and self.narrowest[1] <= DEGENERATE_CHANNELS


def describe(model_name: str, input_shape, **options) -> Shape:
  """Params, MACs and each Inception block's branch widths.

  Only the branches that exist are listed: #1x1, #3x3 reduce (with the
  bottleneck), #3x3, #5x5 reduce (with the bottleneck), #5x5, pool proj
  (with ``pool_proj``). Models without Inception blocks list none.
  """
  model = models.get_model(model_name, **options)
  # Inference layers only: the training pass's extra trace adds no widths.
  report = flops.analyze(model, input_shape, xla=False, trace_training=False)
  branches, outputs = {}, {}
  for block in report.blocks:
    if block.widths is None:
      continue
    w = block.widths
    live = [w.c1x1]
    live += [w.c3x3_reduce] if model.bottleneck else []
    live += [w.c3x3]
    live += [w.c5x5_reduce] if model.bottleneck else []
    live += [w.c5x5]
    live += [w.pool_proj] if model.pool_proj else []
    name = block.name.removeprefix('inception_')
    branches[name] = tuple(live)
    outputs[name] = (w.c1x1, w.c3x3, w.c5x5) + (
        (w.pool_proj,) if model.pool_proj else ())
  return Shape(report.inference_params, report.macs, branches, outputs)


def format_shape(shape: Shape, target: int | None = None) -> str:
  """One line: params, MACs (against a target), narrowest branch, 3a's widths."""
  line = f'{shape.params:,} params, {shape.macs:,} MACs/image'
  if target:
    line += f' ({shape.macs / target:.3f}x the target {target:,})'
  if shape.outputs:
    block, channels = shape.narrowest
    first = next(iter(shape.branches))
    line += (f'; {first} branches {"/".join(map(str, shape.branches[first]))}'
             f'; narrowest branch {channels} ch in {block}')
    if shape.degenerate:
      line += ' (DEGENERATE)'
  return line
