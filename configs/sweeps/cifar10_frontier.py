"""CIFAR-10 accuracy-vs-MACs frontiers: three Inception module families.

  make frontier   # the lr tuning sweep, then this one (both resumable)
  python sweep.py --config configs/inception_cifar.py:frontier \
      --sweep configs/sweeps/cifar10_frontier.py \
      --workdir results/cifar10_frontier --config.dataset=folder:/tmp/cifar10

A family is one module design trained at several widths (GoogLeNet-CIFAR,
the ``:frontier`` recipe, train[:90%] / eval train[90%:]):
  * bottleneck: Table 1's module (1x1 reductions, pool projection);
  * naive: Fig. 2a's module, at the width whose MACs per image equal the
    bottleneck network's at each width (bisection on the FLOP accounting);
  * separable: the bottleneck module with depthwise-separable 3x3/5x5.

Each family's peak learning rate is the best of its grid on the tuning
sweep (``configs/sweeps/cifar10_frontier_lr.py``: one seed at its
``TUNING_WIDTH``, trained on train[:80%], chosen on train[80%:90%]), read
from its finished runs; train[90%:] is touched only here. Every family's
grid starts as ``LEARNING_RATES`` and follows one rule: while its best lr
sits at an edge of its grid, the grid gains the next factor of 2 past that
edge (at most ``MAX_EXTENSIONS`` times), so a rerun of the tuning sweep
trains the new points. The
bottleneck and naive families also run ``LONG_EPOCHS`` epochs at their
``TUNING_WIDTH``, to show whether their difference still moves with a
longer schedule.
"""
import json
import os

from inception.models import budget, flops
from inception.sweeps import sweep
from inception.training import specs
from inception.errors import UserError

FAMILIES = ('bottleneck', 'naive', 'separable')
# Each family's widths, as the bottleneck network's width for the naive
# family (which is then narrowed to its MACs). The separable module costs
# ~0.44x the MACs at one width, so it runs one step wider: both ranges
# overlap (about 10M to 23M MACs per image). Below 5/64 the naive family
# cannot reach the bottleneck's MACs within 5% (integer channel counts).
WIDTHS = {'bottleneck': (0.078125, 0.125), 'naive': (0.078125, 0.125),
          'separable': (0.125, 0.1875)}
# The lr grid's width per family, its cheapest; the long runs' too.
TUNING_WIDTH = {family: widths[0] for family, widths in WIDTHS.items()}
LEARNING_RATES = (0.1, 0.2, 0.4)  # each family's one-cycle peak: the grid's start
MAX_EXTENSIONS = 2  # factors of 2 a grid may grow past each edge
SEEDS = (0, 1, 2)
LONG_EPOCHS = 16  # twice the recipe's 8: does the difference still move?
# Where the tuning sweep's runs are, relative to the repository root.
TUNING_DIR = 'results/cifar10_frontier_lr'
FINAL_SPLITS = {'train_split': 'train[:90%]', 'eval_split': 'train[90%:]'}
TUNING_SPLITS = {'train_split': 'train[:80%]', 'eval_split': 'train[80%:90%]'}


def _model(bottleneck: bool, separable: bool, width: float) -> dict:
  return {'model.bottleneck': bottleneck, 'model.pool_proj': bottleneck,
          'model.separable': separable, 'model.width': width}


def family_overrides(config, family: str, width: float) -> dict:
  """The model overrides of ``family`` at the bottleneck-network ``width``."""
  if family == 'bottleneck':
    return _model(True, False, width)
  if family == 'separable':
    return _model(True, True, width)
  if family != 'naive':
    raise ValueError(f'unknown family {family!r}; use one of {FAMILIES}')
  model = specs.model_spec(config)
  options = {**dict(model.kwargs), 'separable': False}
  target = budget.macs(model.name, model.input_shape,
                       **{**options, 'bottleneck': True, 'pool_proj': True,
                          'width': width})
  naive = {**options, **flops.naive_overrides(model.name)}
  naive_width, _ = budget.equal_macs_width(model.name, model.input_shape,
                                           naive, target)
  return _model(False, False, naive_width)


def _tuning_overrides(model: dict, lr: float) -> dict:
  return {**model, 'learning_rate': lr, 'seed': 0, **TUNING_SPLITS}


def _score(root: str, overrides: dict) -> float | None:
  """A tuning run's final accuracy on the tuning split; None: not finished."""
  path = os.path.join(root, TUNING_DIR, sweep.run_name(overrides),
                      'summary.json')
  try:
    with open(path) as f:
      return float(json.load(f)['final_eval_accuracy'])
  except (OSError, ValueError, KeyError, TypeError):
    return None


def lr_grid(scores: dict[float, float | None]) -> tuple[float, ...]:
  """A family's grid: ``LEARNING_RATES``, grown past any edge that wins.

  Args:
    scores: lr -> final tuning accuracy (None: not trained yet) of the
      family's runs so far.

  Returns:
    The lrs to train, increasing. It grows only once every lr of the grid
    so far has a score: by one factor of 2 past the best lr when that sits
    at an edge (ties go to the smaller lr), at most ``MAX_EXTENSIONS`` times
    past each end.
  """
  grid = sorted(LEARNING_RATES)
  low = high = 0
  while all(scores.get(lr) is not None for lr in grid):
    best = max(grid, key=lambda lr: (scores[lr], -lr))
    if best == grid[0] and low < MAX_EXTENSIONS:
      grid.insert(0, grid[0] / 2)
      low += 1
    elif best == grid[-1] and high < MAX_EXTENSIONS:
      grid.append(grid[-1] * 2)
      high += 1
    else:
      break
  return tuple(grid)


def _grids(config, root: str):
  """family -> (its tuning model overrides, its grid, lr -> score or None)."""
  grids = {}
  for family in FAMILIES:
    model = family_overrides(config, family, TUNING_WIDTH[family])
    scores = {lr: _score(root, _tuning_overrides(model, lr))
              for lr in sorted(LEARNING_RATES) + [
                  b * 2.0**k for b in (min(LEARNING_RATES), max(LEARNING_RATES))
                  for k in range(-MAX_EXTENSIONS, MAX_EXTENSIONS + 1) if k]}
    grids[family] = (model, lr_grid(scores), scores)
  return grids


def tuning_runs(config, root: str = '.') -> list[tuple[str, float, dict]]:
  """(family, peak lr, overrides) of every run of the lr tuning sweep.

  ``root``: the repository root the tuning runs are under (``TUNING_DIR``).
  """
  return [(family, lr, _tuning_overrides(model, lr))
          for family, (model, grid, _) in _grids(config, root).items()
          for lr in grid]


def tuned_learning_rates(config, root: str = '.') -> dict[str, float]:
  """family -> the peak lr with the best final accuracy on the tuning split.

  Ties go to the smaller lr.

  Raises:
    UserError: a tuning run of the grid is missing or unfinished (the grid
      may have grown: rerun the tuning sweep).
  """
  best = {}
  for family, (model, grid, scores) in _grids(config, root).items():
    for lr in grid:
      if scores[lr] is None:
        path = os.path.join(root, TUNING_DIR,
                            sweep.run_name(_tuning_overrides(model, lr)))
        raise UserError(
            f'the lr tuning run {path} is missing or unfinished: run the '
            'tuning sweep first (make frontier runs both)')
    best[family] = max(grid, key=lambda lr, s=scores: (s[lr], -lr))
  return best


def get_sweep(config):
  """One dict of overrides per final run: seed-major, long runs last."""
  lrs = tuned_learning_rates(config)
  runs = []
  for seed in SEEDS:
    for i in range(2):
      for family in FAMILIES:
        runs.append({**family_overrides(config, family, WIDTHS[family][i]),
                     'learning_rate': lrs[family], 'seed': seed,
                     **FINAL_SPLITS})
  for seed in SEEDS:
    for family in ('bottleneck', 'naive'):
      runs.append({**family_overrides(config, family, TUNING_WIDTH[family]),
                   'learning_rate': lrs[family], 'seed': seed,
                   'num_epochs': LONG_EPOCHS, **FINAL_SPLITS})
  return runs
