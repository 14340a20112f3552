"""Frontier sweeps: families of networks across widths, every family tuned alike.

A *family* is one design trained at several widths. A ``Frontier`` names its
families, their widths and how a family is built at a width, and plans both
sweeps of the protocol:

* the lr tuning sweep: each family at its cheapest width, one seed, at every
  peak lr of its grid, trained on ``train[:80%]`` and scored on
  ``train[80%:90%]`` (never the final split);
* the final sweep: every family at every width and seed with its tuned lr,
  on ``train[:90%]`` / ``train[90%:]``, plus optional longer runs that show
  whether a difference still moves with the schedule.

Every grid starts at ``learning_rates`` and follows one rule (``lr_grid``),
so no family gets more tuning than another. The GoogLeNet-CIFAR frontier
(``configs/sweeps/cifar10_frontier.py``) and the NiN ablation
(``configs/sweeps/nin_ablation.py``) are both ``Frontier``s.
"""
import dataclasses
import json
import os
from typing import Callable, Mapping

from inception.errors import UserError
from inception.models import budget, flops
from inception.sweeps import sweep
from inception.training import specs

FINAL_SPLITS = {'train_split': 'train[:90%]', 'eval_split': 'train[90%:]'}
TUNING_SPLITS = {'train_split': 'train[:80%]', 'eval_split': 'train[80%:90%]'}


def lr_grid(scores: Mapping[float, float | None],
            start=(0.1, 0.2, 0.4), max_extensions: int = 2
            ) -> tuple[float, ...]:
  """A family's grid: ``start``, grown past any edge that wins.

  Args:
    scores: lr -> final tuning accuracy (None: not trained yet) of the
      family's runs so far.
    start: the grid every family starts from.
    max_extensions: factors of 2 the grid may grow past each end.

  Returns:
    The lrs to train, increasing. It grows only once every lr of the grid
    so far has a score: by one factor of 2 past the best lr when that sits
    at an edge (ties go to the smaller lr), at most ``max_extensions`` times
    past each end.
  """
  grid = sorted(start)
  low = high = 0
  while all(scores.get(lr) is not None for lr in grid):
    best = max(grid, key=lambda lr: (scores[lr], -lr))
    if best == grid[0] and low < max_extensions:
      grid.insert(0, grid[0] / 2)
      low += 1
    elif best == grid[-1] and high < max_extensions:
      grid.append(grid[-1] * 2)
      high += 1
    else:
      break
  return tuple(grid)


def equal_macs_width(config, width: float, reference: Mapping[str, object],
                     naive: Mapping[str, object] = None) -> float:
  """The naive network's width whose MACs per image equal the reference's.

  Args:
    config: names the model and its other options.
    width: the reference network's width.
    reference: the options that make the reference network (e.g.
      ``bottleneck=True``).
    naive: options of the naive network beyond ``flops.naive_overrides``.
  """
  model = specs.model_spec(config)
  options = dict(model.kwargs)
  target = budget.macs(model.name, model.input_shape,
                       **{**options, **reference, 'width': width})
  naive_width, _ = budget.equal_macs_width(
      model.name, model.input_shape,
      {**options, **flops.naive_overrides(model.name), **(naive or {})},
      target)
  return naive_width


@dataclasses.dataclass(frozen=True)
class Frontier:
  """Families x widths x seeds, each family's peak lr tuned by one rule.

  Attributes:
    families: the family names, in the order runs are planned.
    widths: family -> its widths, cheapest first (the tuning width).
    overrides: ``(config, family, width) -> {config field: value}``, the
      model overrides that make ``family`` at ``width``.
    tuning_dir: where the tuning sweep's runs are, relative to ``root``.
    learning_rates: every family's grid before it grows.
    max_extensions: factors of 2 a grid may grow past each end.
    seeds: the final runs' seeds.
    long_epochs: if set, ``long_families`` also run this many epochs at
      their tuning width (the schedule check).
    long_families: the families that get the long runs.
  """
  families: tuple[str, ...]
  widths: Mapping[str, tuple[float, ...]]
  overrides: Callable[..., dict]
  tuning_dir: str
  learning_rates: tuple[float, ...] = (0.1, 0.2, 0.4)
  max_extensions: int = 2
  seeds: tuple[int, ...] = (0, 1, 2)
  long_epochs: float | None = None
  long_families: tuple[str, ...] = ()

  def tuning_width(self, family: str) -> float:
    return self.widths[family][0]

  def lr_grid(self, scores: Mapping[float, float | None]
              ) -> tuple[float, ...]:
    return lr_grid(scores, self.learning_rates, self.max_extensions)

  def _tuning(self, model: dict, lr: float) -> dict:
    return {**model, 'learning_rate': lr, 'seed': 0, **TUNING_SPLITS}

  def _score(self, root: str, overrides: dict) -> float | None:
    """A tuning run's final accuracy on the tuning split; None: not done."""
    path = os.path.join(root, self.tuning_dir, sweep.run_name(overrides),
                        'summary.json')
    try:
      with open(path, encoding='utf-8') as f:
        return float(json.load(f)['final_eval_accuracy'])
    except (OSError, ValueError, KeyError, TypeError):
      return None

  def _grids(self, config, root: str):
    """family -> (its tuning model overrides, its grid, lr -> score)."""
    low, high = min(self.learning_rates), max(self.learning_rates)
    candidates = sorted(self.learning_rates) + [
        b * 2.0**k for b in (low, high)
        for k in range(-self.max_extensions, self.max_extensions + 1) if k]
    grids = {}
    for family in self.families:
      model = self.overrides(config, family, self.tuning_width(family))
      scores = {lr: self._score(root, self._tuning(model, lr))
                for lr in candidates}
      grids[family] = (model, self.lr_grid(scores), scores)
    return grids

  def tuning_runs(self, config, root: str = '.'
                  ) -> list[tuple[str, float, dict]]:
    """(family, peak lr, overrides) of every run of the lr tuning sweep."""
    return [(family, lr, self._tuning(model, lr))
            for family, (model, grid, _) in self._grids(config, root).items()
            for lr in grid]

  def tuned_learning_rates(self, config, root: str = '.'
                           ) -> dict[str, float]:
    """family -> its grid's lr with the best tuning accuracy (ties: smaller).

    Raises:
      UserError: a tuning run of the grid is missing or unfinished (the grid
        may have grown: rerun the tuning sweep).
    """
    best = {}
    for family, (model, grid, scores) in self._grids(config, root).items():
      for lr in grid:
        if scores[lr] is None:
          path = os.path.join(root, self.tuning_dir,
                              sweep.run_name(self._tuning(model, lr)))
          raise UserError(
              f'the lr tuning run {path} is missing or unfinished: run the '
              'tuning sweep first')
      best[family] = max(grid, key=lambda lr, s=scores: (s[lr], -lr))
    return best

  def final_runs(self, config, root: str = '.') -> list[dict]:
    """One dict of overrides per final run: seed-major, long runs last."""
    lrs = self.tuned_learning_rates(config, root)
    runs = []
    for seed in self.seeds:
      for i in range(max(len(w) for w in self.widths.values())):
        for family in self.families:
          if i < len(self.widths[family]):
            runs.append({**self.overrides(config, family,
                                          self.widths[family][i]),
                         'learning_rate': lrs[family], 'seed': seed,
                         **FINAL_SPLITS})
    if self.long_epochs:
      for seed in self.seeds:
        for family in self.long_families:
          runs.append({**self.overrides(config, family,
                                        self.tuning_width(family)),
                       'learning_rate': lrs[family], 'seed': seed,
                       'num_epochs': self.long_epochs, **FINAL_SPLITS})
    return runs
