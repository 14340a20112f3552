"""NiN ablation: what do the hidden 1x1 layers of mlpconv buy, across widths?

  python sweep.py --config configs/nin_cifar.py:ablation \
      --sweep configs/sweeps/nin_ablation_lr.py \
      --workdir results/nin_ablation_lr --config.dataset=folder:/tmp/cifar10
  python sweep.py --config configs/nin_cifar.py:ablation \
      --sweep configs/sweeps/nin_ablation.py \
      --workdir results/nin_ablation --config.dataset=folder:/tmp/cifar10

Two families of ``nin_cifar`` (the ``:ablation`` recipe), the same protocol
as the GoogLeNet-CIFAR frontier (``inception.sweeps.frontier``):
  * mlpconv: each block a kxk convolution and two hidden 1x1 layers, at
    widths 1/8 and 1/4 of the paper's network (about 5.1M and 17M MACs per
    image, the range of the GoogLeNet-CIFAR frontier);
  * plain: the hidden 1x1 layers removed (the classifier 1x1 stays), at the
    width whose MACs per image equal mlpconv's at each width (bisection on
    the FLOP accounting).
Each family's peak lr is tuned at its cheapest width on train[:80%] ->
train[80%:90%]; the final runs train on train[:90%] and evaluate on
train[90%:], three seeds each. Both families also run ``LONG_EPOCHS`` epochs
at their cheapest width, to show whether their difference still moves with a
longer schedule (the runs last in the sweep).
"""
from inception.sweeps import frontier

FAMILIES = ('mlpconv', 'plain')
# Each family's widths, as the mlpconv network's width for the plain family
# (which is then narrowed to its MACs: ~0.90x the width).
# Sized for about 4 hours on a 2-core CPU at --parallel 2, float32.
WIDTHS = {'mlpconv': (0.125, 0.25), 'plain': (0.125, 0.25)}
LEARNING_RATES = (0.1, 0.2, 0.4)  # each family's one-cycle peak: the grid's start
SEEDS = (0, 1, 2)
LONG_EPOCHS = 16  # twice the recipe's 8: does the difference still move?
# Where the tuning sweep's runs are, relative to the repository root.
TUNING_DIR = 'results/nin_ablation_lr'


def family_overrides(config, family: str, width: float) -> dict:
  """The model overrides of ``family`` at the mlpconv-network ``width``."""
  if family == 'mlpconv':
    return {'model.bottleneck': True, 'model.width': width}
  if family != 'plain':
    raise ValueError(f'unknown family {family!r}; use one of {FAMILIES}')
  return {'model.bottleneck': False, 'model.width': frontier.equal_macs_width(
      config, width, reference={'bottleneck': True})}


FRONTIER = frontier.Frontier(
    families=FAMILIES, widths=WIDTHS, overrides=family_overrides,
    tuning_dir=TUNING_DIR, learning_rates=LEARNING_RATES, seeds=SEEDS,
    long_epochs=LONG_EPOCHS, long_families=FAMILIES)
tuning_runs = FRONTIER.tuning_runs
tuned_learning_rates = FRONTIER.tuned_learning_rates


def get_sweep(config):
  """One dict of overrides per final run: seed-major."""
  return FRONTIER.final_runs(config)
