"""The report's figures: accuracy against MACs, training FLOPs and wall time.

Each function draws one figure of a list of ``report.Arm``s, either into a
given matplotlib ``ax`` (the notebook) or into a PNG file (the report, through
matplotlib's object API: no pyplot, no backend). Arms are styled by kind:
bottleneck, naive, separable; ``plot_frontier`` draws ``report.Family``s.

Accuracy lives in [0, 1], and so do its drawn intervals and bands: a Student-t
interval of a few seeds near 1.0 runs past it, which no accuracy can.
"""
import contextlib

import numpy as np

from inception.sweeps import stats

_STYLE = {'bottleneck': ('o', 'tab:blue'), 'naive': ('s', 'tab:red'),
          'separable': ('^', 'tab:green'), 'other': ('D', 'tab:gray')}


def _style(arm, i):
  marker, color = _STYLE.get(arm.kind, _STYLE['other'])
  if i:  # several arms of one kind (e.g. two naive widths): vary the shade
    color = f'C{(i + 3) % 10}'
  return marker, color


def _styled(arms):
  seen = {}
  for arm in arms:
    i = seen.get(arm.kind, 0)
    seen[arm.kind] = i + 1
    yield arm, _style(arm, i)


def _clip(v):
  """``v`` (a number or an array) inside the accuracy range [0, 1]."""
  return np.clip(v, 0.0, 1.0)


def _accuracy_axis(ax):
  """Keeps the accuracy axis inside [0, 1] (autoscaling pads past 1.0)."""
  low, high = ax.get_ylim()
  ax.set_ylim(max(low, 0.0), min(high, 1.0))


def _arms_legend(ax):
  """The legend below the axes: arm labels are long, and inside the axes
  they would hide the points; a saved figure grows to hold it."""
  ax.legend(fontsize='small', loc='upper center', frameon=False,
            bbox_to_anchor=(0.5, -0.2))


@contextlib.contextmanager
def _figure(path, ax, size):
  """Yields an axes: ``ax`` itself, or a new figure's saved to ``path``."""
  if ax is not None:
    yield ax
    return
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=size)
  yield fig.subplots()
  fig.tight_layout()
  fig.savefig(path, dpi=120, bbox_inches='tight')


def plot_pareto(arms, path=None, ax=None):
  """Final eval accuracy against MACs per image (log x), 95% CI error bars.

  The intervals are clipped to [0, 1]; markers at 1.0 are drawn whole.
  """
  with _figure(path, ax, (6.5, 4.5)) as ax:
    for arm, (marker, color) in _styled(arms):
      s = arm.accuracy
      if not s.n:
        continue
      err = None
      if s.n > 1:
        err = [[s.mean - _clip(s.ci_low)], [_clip(s.ci_high) - s.mean]]
      ax.errorbar([arm.macs], [s.mean], yerr=err, fmt=marker, color=color,
                  capsize=4, label=f'{arm.label} (n={s.n})', clip_on=False)
      ax.scatter([arm.macs] * s.n, arm.final_accuracies(), marker=marker,
                 facecolors='none', edgecolors=color, alpha=0.5, s=18,
                 clip_on=False)
    ax.set_xscale('log')
    ax.set_xlabel('MACs per image (log scale)')
    ax.set_ylabel('final eval accuracy')
    ax.set_title('Accuracy vs compute (mean, 95% CI; rings: seeds)')
    ax.grid(True, which='both', alpha=0.3)
    _arms_legend(ax)
    _accuracy_axis(ax)


def _curve_plot(arms, ax, key, xlabel, title):
  for arm, (marker, color) in _styled(arms):
    x, mean, std = stats.mean_band([r.curve(key) for r in arm.runs])
    if not len(x):
      continue
    ax.plot(x, mean, marker=marker, markersize=3, color=color,
            label=f'{arm.label} (n={len(arm.runs)})')
    ax.fill_between(x, _clip(mean - std), _clip(mean + std), color=color,
                    alpha=0.2)
  ax.set_xlabel(xlabel)
  ax.set_ylabel('eval accuracy')
  ax.set_title(title)
  ax.grid(True, alpha=0.3)
  _arms_legend(ax)
  _accuracy_axis(ax)


def plot_curves(arms, path=None, ax=None):
  """Eval accuracy against cumulative training FLOPs: mean over seeds ± std."""
  with _figure(path, ax, (7, 4.5)) as ax:
    _curve_plot(arms, ax, 'train_flops',
                'cumulative training FLOPs (6 x MACs x images, log scale)',
                'Accuracy during training (mean over seeds, band: ±1 std)')
    ax.set_xscale('log')


def plot_time(arms, path=None, ax=None, note: str = ''):
  """Eval accuracy against wall time since the run started (machine-dependent)."""
  with _figure(path, ax, (7, 4.5)) as ax:
    _curve_plot(arms, ax, 'wall_time_s', 'wall time since start (s)',
                'Accuracy vs wall time (mean over seeds, band: ±1 std)')
    ax.text(0.99, 0.02, 'wall time depends on the machine and its load'
            + (f'\n{note}' if note else ''), transform=ax.transAxes,
            ha='right', va='bottom', fontsize='small', color='0.3')



_FRONTIER_PANELS = (
    ('macs', 'MACs per image (log scale)', 'log'),
    ('train_flops', 'training FLOPs per run (log scale)', 'log'),
    ('speed', 'training images/s', 'linear'))


def plot_frontier(families, epochs, path=None, axes=None, note: str = '',
                  speed_on: str = ''):
  """Final eval accuracy against MACs, training FLOPs and images/s.

  The images/s are each arm's ``speed``: ``speed_on`` names the machine
  where they were timed side by side; '' means the runs' own logged rates.

  One line per family through its arms trained ``epochs`` epochs, by MACs;
  each point is the mean over seeds with its 95% CI (clipped to [0, 1]).
  An arm whose ``narrow`` is true is drawn hollow; ``note`` (the footnote
  that says why) goes under the panels. ``axes``: three axes to draw into
  (sharing nothing), else a new figure saved to ``path``.
  """
  fig = None
  if axes is None:
    from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
    fig = Figure(figsize=(15, 4.8))
    axes = fig.subplots(1, 3, sharey=True)
  for ax, (key, xlabel, scale) in zip(axes, _FRONTIER_PANELS):
    for family, (marker, color) in _styled(families):
      points = [a for a in family.at(epochs) if a.accuracy.n]
      if not points:
        continue
      xs = [getattr(a, key) for a in points]
      ys = [a.accuracy.mean for a in points]
      n = '/'.join(sorted({str(a.accuracy.n) for a in points}))
      ax.plot(xs, ys, color=color, alpha=0.6)
      ax.plot([], [], marker=marker, color=color,
              label=f'{family.name} (n={n})')  # the legend's entry
      for a, x, y in zip(points, xs, ys):
        s = a.accuracy
        err = None
        if s.n > 1:
          err = [[y - _clip(s.ci_low)], [_clip(s.ci_high) - y]]
        ax.errorbar([x], [y], yerr=err, fmt=marker, color=color, capsize=4,
                    markerfacecolor='none' if a.narrow else color,
                    clip_on=False)
    ax.set_xscale(scale)
    if key == 'speed':
      xlabel += (f' (timed side by side, {speed_on})' if speed_on
                 else ' (as the runs logged it)')
    ax.set_xlabel(xlabel)
    ax.grid(True, which='both', alpha=0.3)
    _accuracy_axis(ax)
  axes[0].set_ylabel('final eval accuracy')
  axes[0].legend(fontsize='small')
  schedule = f', {epochs:g} epochs' if isinstance(epochs, (int, float)) else ''
  axes[1].set_title(f'Accuracy frontiers{schedule} (mean over seeds, 95% CI)')
  if note:
    axes[0].figure.text(0.01, 0.01, note, fontsize='small', color='0.3',
                        wrap=True)
  if fig is not None:
    fig.tight_layout(rect=(0, 0.07 if note else 0, 1, 1))
    fig.savefig(path, dpi=120)


def plot_run_curves(curves, path=None, ax=None, target: float | None = None):
  """Eval accuracy against wall-clock minutes, one line per run.

  Args:
    curves: run name -> ``time_to_accuracy.eval_curve`` points.
    path: PNG to write when ``ax`` is None.
    ax: draw into this axes instead.
    target: an accuracy to mark with a dashed line (e.g. a recipe's goal).
  """
  with _figure(path, ax, (7, 4.5)) as ax:
    for name, points in sorted(curves.items()):
      ax.plot([p['wall_s'] / 60 for p in points],
              [p['accuracy'] for p in points], marker='o', markersize=3,
              label=name)
    if target is not None:
      ax.axhline(target, color='0.4', linestyle='--', linewidth=1,
                 label=f'{target:g}')
    ax.set_xlabel('wall time since start (min)')
    ax.set_ylabel('eval accuracy')
    ax.set_title('Accuracy vs wall time')
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize='small')
    _accuracy_axis(ax)
