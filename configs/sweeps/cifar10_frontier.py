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
sweep (``configs/sweeps/cifar10_frontier_lr.py``: one seed at its cheapest
width, trained on train[:80%], chosen on train[80%:90%]), read from its
finished runs; train[90%:] is touched only here. Every grid starts as
``LEARNING_RATES`` and grows by one rule (``inception.sweeps.frontier``).
The bottleneck and naive families also run ``LONG_EPOCHS`` epochs at their
cheapest width, to show whether their difference still moves with a longer
schedule.
"""
from inception.sweeps import frontier

FAMILIES = ('bottleneck', 'naive', 'separable')
# Each family's widths, as the bottleneck network's width for the naive
# family (which is then narrowed to its MACs). The separable module costs
# ~0.44x the MACs at one width, so it runs one step wider: both ranges
# overlap (about 10M to 23M MACs per image). Below 5/64 the naive family
# cannot reach the bottleneck's MACs within 5% (integer channel counts).
WIDTHS = {'bottleneck': (0.078125, 0.125), 'naive': (0.078125, 0.125),
          'separable': (0.125, 0.1875)}
LEARNING_RATES = (0.1, 0.2, 0.4)  # each family's one-cycle peak: the grid's start
SEEDS = (0, 1, 2)
LONG_EPOCHS = 16  # twice the recipe's 8: does the difference still move?
# Where the tuning sweep's runs are, relative to the repository root.
TUNING_DIR = 'results/cifar10_frontier_lr'


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
  return _model(False, False, frontier.equal_macs_width(
      config, width, naive={'separable': False},
      reference={'bottleneck': True, 'pool_proj': True, 'separable': False}))


FRONTIER = frontier.Frontier(
    families=FAMILIES, widths=WIDTHS, overrides=family_overrides,
    tuning_dir=TUNING_DIR, learning_rates=LEARNING_RATES, seeds=SEEDS,
    long_epochs=LONG_EPOCHS, long_families=('bottleneck', 'naive'))
tuning_runs = FRONTIER.tuning_runs
tuned_learning_rates = FRONTIER.tuned_learning_rates


def get_sweep(config):
  """One dict of overrides per final run: seed-major, long runs last."""
  return FRONTIER.final_runs(config)
