"""Statistics over seeds: per-arm summaries and arm-vs-reference comparisons.

Everything here is scipy.stats; nothing is a hand-written formula:
  * an arm's 95% CI of the mean is Student's t interval
    (``scipy.stats.t.interval`` with the standard error ``scipy.stats.sem``);
  * the difference of two arms is Welch's t-test
    (``scipy.stats.ttest_ind(equal_var=False)``), whose
    ``confidence_interval`` is the 95% CI of the difference of means;
  * a difference read off two accuracy-vs-MACs frontiers (interpolated
    between measured widths, ``numpy.interp`` in log MACs) gets a percentile
    bootstrap CI (``scipy.stats.bootstrap``), each width's seeds resampled
    on their own.

A sentence never calls a difference real when its interval contains zero.
"""
import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


@dataclasses.dataclass
class ArmStats:
  """Mean, sample std and Student-t CI of one arm's values over seeds."""
  n: int
  mean: float
  std: float  # sample standard deviation (ddof=1); nan for one seed
  ci_low: float
  ci_high: float


def summarize(values) -> ArmStats:
  """Mean ± std and the 95% CI (Student t) of ``values``; nan CI for n < 2."""
  x = np.asarray([v for v in values if v is not None], dtype=float)
  n = len(x)
  if n == 0:
    return ArmStats(0, math.nan, math.nan, math.nan, math.nan)
  mean = float(x.mean())
  if n < 2:
    return ArmStats(1, mean, math.nan, math.nan, math.nan)
  std = float(x.std(ddof=1))
  if std == 0:
    return ArmStats(n, mean, 0.0, mean, mean)
  low, high = stats.t.interval(CONFIDENCE, n - 1, loc=mean, scale=stats.sem(x))
  return ArmStats(n, mean, std, float(low), float(high))


@dataclasses.dataclass
class Comparison:
  """Arm minus reference: difference of means, its 95% CI and Welch's p."""
  arm: str
  reference: str
  diff: float
  ci_low: float
  ci_high: float
  p_value: float

  @property
  def significant(self) -> bool:
    """The interval excludes zero (equivalently p < 0.05 for Welch's test)."""
    return (not math.isnan(self.ci_low)) and (self.ci_low > 0 or
                                               self.ci_high < 0)

  def sentence(self, what: str = 'accuracy', scale: float = 100,
               unit: str = ' points') -> str:
    """The comparison in words; a difference is real only if its CI excludes 0."""
    if math.isnan(self.p_value):
      return (f'{self.arm} vs {self.reference}: too few seeds to test the '
              'difference.')
    d = f'{scale * self.diff:+.2f}{unit}'
    ci = (f'95% CI [{scale * self.ci_low:+.2f}, {scale * self.ci_high:+.2f}]'
          f', Welch p = {self.p_value:.3g}')
    if self.significant:
      word = 'higher' if self.diff > 0 else 'lower'
      return (f'{self.arm} has {word} {what} than {self.reference} '
              f'({d}, {ci}).')
    return (f'{self.arm} and {self.reference} are not distinguishable in '
            f'{what} at these seeds ({d}, {ci}: the interval contains zero).')


def compare(arm: str, values, reference: str, ref_values) -> Comparison:
  """Welch's t-test of ``values`` against ``ref_values`` (two-sided)."""
  a = np.asarray([v for v in values if v is not None], dtype=float)
  b = np.asarray([v for v in ref_values if v is not None], dtype=float)
  diff = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
  if len(a) < 2 or len(b) < 2:
    return Comparison(arm, reference, diff, math.nan, math.nan, math.nan)
  if a.std() == 0 and b.std() == 0:  # t is undefined; the CI is the point
    p = 1.0 if diff == 0 else 0.0
    return Comparison(arm, reference, diff, diff, diff, p)
  result = stats.ttest_ind(a, b, equal_var=False)
  ci = result.confidence_interval(CONFIDENCE)
  return Comparison(arm, reference, diff, float(ci.low), float(ci.high),
                    float(result.pvalue))


@dataclasses.dataclass
class Contrast:
  """A weighted sum of sample means (a difference, or a difference of two)."""
  estimate: float
  ci_low: float  # nan when a sample has fewer than two values
  ci_high: float

  @property
  def significant(self) -> bool:
    return (not math.isnan(self.ci_low)) and (self.ci_low > 0 or
                                               self.ci_high < 0)

  def points(self) -> str:
    """'+1.25 points, 95% bootstrap CI [-0.50, +3.00]' (fractions as points)."""
    return (f'{100 * self.estimate:+.2f} points, 95% bootstrap CI '
            f'[{100 * self.ci_low:+.2f}, {100 * self.ci_high:+.2f}]')


BOOTSTRAP_SEED = 0  # The report's bootstrap intervals are reproducible.


def contrast(samples: Sequence, weights: Sequence[float]) -> Contrast:
  """sum_i weights[i] * mean(samples[i]), with a 95% bootstrap CI.

  Each sample (one width's accuracies over seeds) is resampled on its own
  (``scipy.stats.bootstrap`` with several samples, unpaired).
  """
  samples = [np.asarray(s, dtype=float) for s in samples]
  weights = np.asarray(weights, dtype=float)
  estimate = float(sum(w * s.mean() for w, s in zip(weights, samples)))
  if min(len(s) for s in samples) < 2:
    return Contrast(estimate, math.nan, math.nan)

  def statistic(*resampled, axis=-1):
    return sum(w * s.mean(axis=axis) for w, s in zip(weights, resampled))

  # Percentile, not BCa: BCa's acceleration is a jackknife over each sample,
  # which with three seeds has three values and is undefined (nan, with a
  # warning) when they tie; the percentile interval always exists. With so
  # few seeds either is narrower than a Student-t interval would be.
  result = stats.bootstrap(samples, statistic, vectorized=True,
                           method='percentile', confidence_level=CONFIDENCE,
                           rng=np.random.default_rng(BOOTSTRAP_SEED))
  ci = result.confidence_interval
  return Contrast(estimate, float(ci.low), float(ci.high))


def interpolation_weights(x: float, xs: Sequence[float]) -> np.ndarray:
  """Weights w, one per point, with ``w @ ys`` the frontier's value at ``x``.

  The frontier through (xs, ys) is linear in log x between the two points
  around ``x``; where ``x`` is a point, it is that point's value.

  Raises:
    ValueError: ``x`` outside [min(xs), max(xs)], or xs not increasing.
  """
  log = np.log(np.asarray(xs, dtype=float))
  if np.any(np.diff(log) <= 0):
    raise ValueError(f'the points {list(xs)} are not in increasing order')
  if not log[0] <= math.log(x) <= log[-1]:
    raise ValueError(f'{x} is outside the points\' span [{xs[0]}, {xs[-1]}]')
  return np.array([np.interp(math.log(x), log, e) for e in np.eye(len(log))])


@dataclasses.dataclass
class FrontierComparison:
  """Family minus reference at one MACs budget, each read off its frontier."""
  family: str
  reference: str
  macs: int
  accuracy: float  # the family's, interpolated
  ref_accuracy: float  # the reference's, interpolated
  diff: Contrast

  def sentence(self) -> str:
    """The difference in words; it is real only if its CI excludes zero."""
    at = f'At {self.macs:,} MACs per image'
    d = self.diff
    if math.isnan(d.ci_low):
      return (f'{at}, {self.family} vs {self.reference}: too few seeds to '
              f'bound the difference ({100 * d.estimate:+.2f} points).')
    text = d.points()
    if d.significant:
      word = 'higher' if d.estimate > 0 else 'lower'
      return (f'{at}, {self.family} has {word} accuracy than '
              f'{self.reference} ({text}).')
    return (f'{at}, {self.family} and {self.reference} are not '
            f'distinguishable (the 95% CI contains zero: {text}).')


def frontier_difference(family: str, macs: int, xs, samples, reference: str,
                        ref_xs, ref_samples) -> FrontierComparison:
  """``family`` minus ``reference`` in accuracy at ``macs`` MACs per image.

  Args:
    xs, ref_xs: each family's measured MACs per image, increasing.
    samples, ref_samples: per measured width, its accuracies over seeds.
  """
  w = interpolation_weights(macs, xs)
  ref_w = interpolation_weights(macs, ref_xs)
  # Only the widths the interpolation reads are resampled.
  used = [(wi, s) for wi, s in zip(w, samples) if wi] + [
      (-wi, s) for wi, s in zip(ref_w, ref_samples) if wi]
  diff = contrast([s for _, s in used], [wi for wi, _ in used])
  value = float(w @ [np.mean(s) for s in samples])
  ref_value = float(ref_w @ [np.mean(s) for s in ref_samples])
  return FrontierComparison(family, reference, int(macs), value, ref_value,
                            diff)


def mean_band(curves: list[list[tuple[float, float]]]):
  """Mean and sample std across seeds of curves sampled at the same points.

  Curves are (x, y) lists; they are cut to the shortest, and x is averaged
  (runs of one arm evaluate at the same steps, so x agrees up to wall time).

  Returns:
    (x, mean, std) arrays; std is zero for a single curve.
  """
  curves = [c for c in curves if c]
  if not curves:
    return np.array([]), np.array([]), np.array([])
  n = min(len(c) for c in curves)
  arr = np.array([c[:n] for c in curves], dtype=float)  # (runs, n, 2)
  x = arr[:, :, 0].mean(0)
  y = arr[:, :, 1]
  std = y.std(0, ddof=1) if len(curves) > 1 else np.zeros(n)
  return x, y.mean(0), std
