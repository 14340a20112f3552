"""Sweep report: per-run and per-arm tables with statistics, and three plots.

  python report.py results/cifar10_ablation [--reference bottleneck]
      [--allow_mixed]

Runs are grouped into arms by their overrides, every one but the seed and
those that do not change the result (how often to log, evaluate and save:
``inception.training.identity.MUTABLE``): from the sweep's manifest (``sweep.json``)
when there is one, otherwise from the runs' own ``config.json`` (every such
field that differs between runs), so runs started from ``--dry_run`` commands
on a cluster group the same way. A run whose files are not what a run writes
is reported unreadable in one warning line and left out of the arms.

Writes ``results.csv`` (one row per run), ``results.md`` (arms: mean ± std,
95% CI, params, MACs, training FLOPs, images/s; each arm against the
reference arm: difference, 95% CI, Welch's p, one sentence; branch widths;
provenance), ``pareto.png``, ``curves.png`` and ``time.png``.

Where at least two module families (a design, every override but the width
and the schedule) each ran at two or more widths, it also draws their
accuracy-vs-cost frontiers (``frontier.png``: against MACs per image,
training FLOPs and training images/s, timed side by side on one machine where
the sweep holds a ``speed.json`` from ``benchmarks/sweep_speed.py``, else as
the runs logged them) on the most common schedule, and adds
to ``results.md`` each family's accuracy against the reference family's at
equal MACs (read off the frontiers) and, for families that also ran another
number of epochs, the schedule check. A frontier compares code and machines:
its runs must share one git commit and one platform (``--allow_mixed`` to
draw it anyway).
"""
import collections
import contextlib
import csv
import dataclasses
import functools
import json
import math
import os
import sys
import warnings

import ml_collections

from inception.models import budget
from inception.sweeps import cost, plots, stats
from inception.training import identity, metrics, specs
from inception.training import workdir as workdir_lib
from inception.errors import UserError

COLUMNS = ('run', 'arm', 'status', 'seed', 'params', 'macs', 'final_accuracy',
           'best_accuracy', 'train_flops', 'train_time_s', 'wall_time_s',
           'images_per_s', 'git_commit', 'cpu', 'error')
_ARM_FIELDS = ('model.bottleneck', 'model.pool_proj', 'model.separable',
               'model.width')
# A frontier point whose narrowest branch output has fewer channels is drawn
# hollow: the family's design barely survives at that width.
NARROW_CHANNELS = 4


@dataclasses.dataclass
class RunResult:
  """What a run directory says about the run."""
  name: str
  workdir: str
  overrides: dict
  status: str
  summary: dict
  config: dict
  records: list[dict]  # eval records of metrics.jsonl
  error: str = ''
  arm: str = ''  # the arm's label (see ``arms``)
  kind: str = ''  # 'bottleneck', 'naive' or 'separable'

  @property
  def seed(self):
    return self.summary.get('seed', self.config.get('seed'))

  def train_flops(self, step: int) -> int | None:
    """Training FLOPs after ``step`` steps: 6 x MACs x images seen."""
    macs, batch = self.summary.get('macs'), self.config.get('batch_size')
    return 6 * macs * step * batch if macs and batch else None

  def curve(self, key: str = 'step') -> list[tuple[float, float]]:
    """(x, eval accuracy); x is 'step', 'train_flops' or 'wall_time_s'."""
    xs = {'step': lambda r: r['step'],
          'train_flops': lambda r: self.train_flops(r['step']),
          'wall_time_s': lambda r: r.get('eval/wall_time_s')}[key]
    return [(xs(r), r['eval/accuracy']) for r in self.records
            if xs(r) is not None]

  def row(self) -> dict:
    s = self.summary
    return {'run': self.name, 'arm': self.arm, 'status': self.status,
            'seed': self.seed,
            **{k: v for k, v in self.overrides.items() if k != 'seed'},
            'params': s.get('params'), 'macs': s.get('macs'),
            'final_accuracy': s.get('final_eval_accuracy'),
            'best_accuracy': s.get('best_eval_accuracy'),
            **({'final_top5_accuracy': s['final_eval_top5_accuracy']}
               if s.get('final_eval_top5_accuracy') is not None else {}),
            'train_flops': self.train_flops(s['step']) if s else None,
            'train_time_s': s.get('train_time_s'),
            'wall_time_s': s.get('wall_time_s'),
            'images_per_s': s.get('images_per_s'),
            'git_commit': s.get('git_commit'), 'cpu': s.get('cpu'),
            'error': self.error}


@dataclasses.dataclass
class Arm:
  """Runs that differ only in their seed."""
  label: str
  kind: str  # 'bottleneck', 'naive', 'separable' or 'other' (plot style)
  runs: list[RunResult]  # finished runs only
  shape: budget.Shape | None = None
  # Its images/s timed beside the other arms' (the sweep's speed.json).
  side_by_side: float | None = None

  def final_accuracies(self) -> list[float]:
    return [r.summary.get('final_eval_accuracy') for r in self.runs]

  def top5_accuracies(self) -> list[float]:
    """Final top-5 accuracies; empty unless every run recorded one (runs
    from before top-5 existed did not)."""
    top5 = [r.summary.get('final_eval_top5_accuracy') for r in self.runs]
    return top5 if all(v is not None for v in top5) else []

  @property
  def accuracy(self) -> stats.ArmStats:
    return stats.summarize(self.final_accuracies())

  @property
  def macs(self) -> int:
    return self.runs[0].summary.get('macs')

  @property
  def params(self) -> int:
    return self.runs[0].summary.get('params')

  @property
  def train_flops(self) -> float:
    """Mean training FLOPs of a run (6 x MACs x images seen)."""
    return stats.summarize([r.train_flops(r.summary['step'])
                            for r in self.runs]).mean

  @property
  def images_per_s(self) -> float:
    """Mean measured training throughput over the runs."""
    return stats.summarize([r.summary.get('images_per_s')
                            for r in self.runs]).mean

  @property
  def speed(self) -> float:
    """Training images/s: timed side by side where the sweep was, else as
    its runs logged it (``images_per_s``)."""
    return self.side_by_side or self.images_per_s

  @property
  def width(self):
    r = self.runs[0]
    return r.config.get('model', {}).get('width',
                                         r.overrides.get('model.width'))

  @property
  def epochs(self):
    """The runs' num_epochs (their config's, else their override)."""
    r = self.runs[0]
    return r.config.get('num_epochs', r.overrides.get('num_epochs'))

  @property
  def narrow(self) -> bool:
    """Its narrowest branch output has fewer than ``NARROW_CHANNELS``."""
    return bool(self.shape and self.shape.outputs) and (
        self.shape.narrowest[1] < NARROW_CHANNELS)


def _config_overrides(configs: list[dict]) -> list[dict]:
  """Per run, the fields that change the result and differ between runs."""
  flat = [identity.flatten(c) for c in configs]
  keys = sorted({k for f in flat for k in f} - set(identity.MUTABLE))
  varying = [k for k in keys
             if len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1]
  return [{k: f.get(k) for k in varying} for f in flat]


def _warn(message: str):
  print(f'warning: {message}', file=sys.stderr, flush=True)


_NUMBERS = ('params', 'macs', 'final_eval_accuracy', 'best_eval_accuracy',
            'train_time_s', 'wall_time_s', 'images_per_s')


def _number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def _unreadable(run_dir: str, summary, status, config) -> str:
  """Why a run's files are not what a run writes ('' when they are)."""
  for name, value in ((workdir_lib.SUMMARY, summary),
                      (workdir_lib.RUN_STATUS, status),
                      (workdir_lib.CONFIG, config)):
    if not isinstance(value, dict):
      return f'{name} holds {type(value).__name__}, not a JSON object'
  if os.path.exists(workdir_lib.path(run_dir, workdir_lib.SUMMARY)):
    if not isinstance(summary.get('step'), int) or isinstance(
        summary['step'], bool):
      return f'{workdir_lib.SUMMARY} has no integer step'
    bad = [k for k in _NUMBERS if summary.get(k) is not None
           and not _number(summary[k])]
    if bad:
      return f'{workdir_lib.SUMMARY} has a non-numeric {bad[0]}'
  if not isinstance(config.get('model', {}), dict):
    return f'{workdir_lib.CONFIG} has no model section'
  return ''


def load_runs(workdir: str, warn=_warn) -> list[RunResult]:
  """Every run of a sweep directory (from its manifest, else its subdirs).

  A run whose summary, status or config is valid JSON but not what a run
  writes (a list, null, a summary without its step) is kept as 'unreadable'
  with one ``warn`` line; the others are reported.

  Raises:
    UserError: no runs at all, every run unreadable, or a file that is not
      valid JSON (it names the file).
  """
  if not os.path.isdir(workdir):
    raise UserError(f'{workdir} is not a sweep directory')
  read = workdir_lib.read_json
  manifest = read(workdir_lib.path(workdir, workdir_lib.MANIFEST))
  entries = manifest.get('runs') if isinstance(manifest, dict) else None
  if isinstance(entries, list):
    entries = [e for e in entries if isinstance(e, dict)
               and isinstance(e.get('name'), str)
               and isinstance(e.get('overrides', {}), dict)]
  if not entries:  # e.g. runs started from --dry_run commands on a cluster
    names = sorted(d for d in os.listdir(workdir) if os.path.exists(
        os.path.join(workdir, d, workdir_lib.CONFIG)))
    configs = [read(os.path.join(workdir, d, workdir_lib.CONFIG))
               for d in names]
    readable = [c if isinstance(c, dict) else {} for c in configs]
    entries = [{'name': n, 'overrides': o}
               for n, o in zip(names, _config_overrides(readable))]
  if not entries:
    raise UserError(f'{workdir} holds no runs (no {workdir_lib.MANIFEST} and '
                    f'no run directories with a {workdir_lib.CONFIG}); give '
                    'the --workdir of a sweep')
  runs = []
  for entry in entries:
    d = os.path.join(workdir, entry['name'])
    summary = read(workdir_lib.path(d, workdir_lib.SUMMARY))
    status = read(workdir_lib.path(d, workdir_lib.RUN_STATUS))
    config = read(workdir_lib.path(d, workdir_lib.CONFIG))
    overrides = dict(entry.get('overrides', {}))
    why = _unreadable(d, summary, status, config)
    if why:
      warn(f'{d} is unreadable ({why}); left out of the report\'s arms')
      runs.append(RunResult(entry['name'], d, overrides, 'unreadable', {}, {},
                            [], why))
      continue
    state = status.get('status') or ('done' if summary else 'pending')
    records = [r for r in metrics.read_jsonl(
        workdir_lib.path(d, workdir_lib.METRICS))
               if _number(r.get('eval/accuracy'))]
    label, kind = _arm_label(config, overrides)
    error = status.get('error', '')
    runs.append(RunResult(entry['name'], d, overrides, str(state), summary,
                          config, records, error if isinstance(error, str)
                          else json.dumps(error), label, kind))
  if all(r.status == 'unreadable' for r in runs):
    raise UserError(f'no run of {workdir} is readable (e.g. {runs[0].workdir}:'
                    f' {runs[0].error}); restore the files or remove the runs')
  return runs


def _arm_label(config: dict, overrides: dict) -> tuple[str, str]:
  """(label, kind) from the run's model config and its other overrides."""
  # A run not started yet has no config.json: its overrides say what it is.
  model = {**config.get('model', {}),
           **{k.split('.', 1)[1]: v for k, v in overrides.items()
              if k.startswith('model.')}}
  bottleneck = model.get('bottleneck', True)
  separable = model.get('separable', False)
  pool_proj = model.get('pool_proj', bottleneck)
  if str(model.get('name', '')).startswith('nin'):
    # NiN's own terms: the mlpconv block, or a plain CNN without its hidden
    # 1x1 layers; styled as the bottleneck and naive designs.
    kind = 'bottleneck' if bottleneck else 'naive'
    label = 'mlpconv' if bottleneck else 'plain'
  elif not bottleneck:
    kind = 'naive'
    label = 'naive' if not pool_proj else 'no reductions (pool proj kept)'
    label += ' separable' if separable else ''
  else:
    kind = 'separable' if separable else 'bottleneck'
    label = kind + ('' if pool_proj else ', no pool proj')
  if 'model.width' in overrides:
    label += f', width {model.get("width"):g}'
  rest = [f'{k}={v}' for k, v in overrides.items()
          if k != 'seed' and k not in _ARM_FIELDS]
  return ', '.join([label, *rest]), kind


_MODEL_FIELDS = ('model', 'image_size', 'channels', 'dtype', 'conv_impl',
                 'activation_dtype')


def _shape(config: dict) -> budget.Shape | None:
  # Seeds share their shape, and the flop count traces the model: once each.
  return _shape_of(json.dumps({k: config[k] for k in _MODEL_FIELDS
                               if k in config}, sort_keys=True))


@functools.lru_cache(maxsize=256)
def _shape_of(model_config: str) -> budget.Shape | None:
  try:
    model = specs.model_spec(ml_collections.ConfigDict(
        json.loads(model_config)))
    return budget.describe(model.name, model.input_shape, **model.kwargs)
  except (KeyError, AttributeError, ValueError, TypeError):
    return None  # an old or foreign config: widths are not shown


def arms(runs: list[RunResult]) -> list[Arm]:
  """Finished runs grouped by their overrides minus the seed, in sweep order."""
  groups: dict[str, Arm] = {}
  for r in runs:
    if r.status != 'done' or not all(_number(r.summary.get(k)) for k in (
        'macs', 'final_eval_accuracy')):
      continue  # not finished, or a summary without its results
    rest = {k: v for k, v in r.overrides.items()
            if k != 'seed' and k not in identity.MUTABLE}
    key = json.dumps(rest, sort_keys=True)
    if key not in groups:
      groups[key] = Arm(r.arm, r.kind, [], _shape(r.config))
    groups[key].runs.append(r)
  return list(groups.values())


def reference_arm(all_arms: list[Arm], name: str = 'bottleneck') -> Arm | None:
  """The arm whose label is ``name``, else the first of that kind, else None."""
  for arm in all_arms:
    if arm.label == name:
      return arm
  return next((a for a in all_arms if a.kind == name), None)


def _fmt(v) -> str:
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return ''
  if isinstance(v, float):
    return f'{v:.4f}' if abs(v) < 10 else f'{v:,.1f}'
  if isinstance(v, int) and not isinstance(v, bool):
    return f'{v:,}'
  return one_line(v)


def one_line(text) -> str:
  """``text`` safe in a markdown table cell or list item.

  One line (every line break, a progress bar's carriage returns included,
  becomes a space) and no ``|``, which would split a table's cells.
  """
  return ' '.join(str(text).replace('|', '/').splitlines())


def _markdown(header, rows) -> str:
  out = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  out += ['| ' + ' | '.join(_fmt(r.get(h)) for h in header) + ' |'
          for r in rows]
  return '\n'.join(out)


def _mean_std(values) -> str:
  if not values:
    return ''
  s = stats.summarize(values)
  return f'{s.mean:.4f} ± {s.std:.4f}' if s.n > 1 else f'{s.mean:.4f}'


def _columns(rows: list[dict]) -> list[str]:
  """results.csv's columns: run, the overrides, then COLUMNS (top-5 after
  top-1 where any run recorded it)."""
  top5 = 'final_top5_accuracy'
  extra = sorted({k for row in rows for k in row} - set(COLUMNS) - {top5})
  cols = ['run', *extra, *COLUMNS[1:]]
  if any(top5 in row for row in rows):
    cols.insert(cols.index('final_accuracy') + 1, top5)
  return cols


def arm_rows(all_arms: list[Arm], ref: Arm | None) -> list[dict]:
  """One row per arm: accuracy mean ± std and 95% CI, cost, speed."""
  rows = []
  for arm in all_arms:
    s = arm.accuracy
    rows.append({
        'arm': arm.label, 'seeds': s.n, 'params': arm.params,
        'macs': arm.macs,
        'macs_vs_ref': f'{arm.macs / ref.macs:.3f}x' if ref else '',
        'narrowest_branch': (f'{arm.shape.narrowest[1]} ch ({arm.shape.narrowest[0]})'
                             if arm.shape and arm.shape.branches else ''),
        'final_accuracy': (f'{s.mean:.4f} ± {s.std:.4f}' if s.n > 1
                           else f'{s.mean:.4f}'),
        # An accuracy lies in [0, 1]: so does its interval.
        '95%_ci': (f'[{max(s.ci_low, 0.0):.4f}, {min(s.ci_high, 1.0):.4f}]'
                   if s.n > 1 else ''),
        'top5_accuracy': _mean_std(arm.top5_accuracies()),
        'train_flops': f'{arm.train_flops:.3g}',
        'images_per_s': f'{arm.images_per_s:.1f}',
    })
  return rows


def comparisons(all_arms: list[Arm], ref: Arm) -> list[stats.Comparison]:
  """Every other arm against the reference arm (final eval accuracy)."""
  return [stats.compare(a.label, a.final_accuracies(), ref.label,
                        ref.final_accuracies())
          for a in all_arms if a is not ref]


@dataclasses.dataclass
class Family:
  """One module design's arms: its widths, on every schedule it ran."""
  name: str
  kind: str
  arms: list[Arm]

  def at(self, epochs) -> list[Arm]:
    """Its arms trained for ``epochs`` epochs, by MACs."""
    return sorted((a for a in self.arms if a.epochs == epochs),
                  key=lambda a: a.macs)


def families(all_arms: list[Arm]) -> list[Family]:
  """Arms grouped by module design and every override but width and epochs."""
  groups: dict[tuple[str, str], list[Arm]] = {}
  for arm in all_arms:
    r = arm.runs[0]
    design, _ = _arm_label(r.config, {
        k: v for k, v in r.overrides.items()
        if k.startswith('model.') and k != 'model.width'})
    rest = {k: v for k, v in r.overrides.items()
            if not k.startswith('model.') and k not in (
                'seed', 'num_epochs', *identity.MUTABLE)}
    groups.setdefault((design, json.dumps(rest, sort_keys=True)),
                      []).append(arm)
  designs = collections.Counter(design for design, _ in groups)
  out = []
  for (design, rest), members in groups.items():
    name = design  # the design's other overrides only where it needs them
    if designs[design] > 1:
      name = ', '.join([design] + [f'{k}={v}'
                                   for k, v in json.loads(rest).items()])
    out.append(Family(name, members[0].kind, members))
  return out


@dataclasses.dataclass
class Frontier:
  """Families on the main schedule (the most common num_epochs)."""
  epochs: float
  families: list[Family]  # those with an arm on the main schedule
  reference: Family | None

  @property
  def arms(self) -> list[Arm]:
    """Its points: every family's arms on the main schedule."""
    return [a for f in self.families for a in f.at(self.epochs)]

  def family_of(self, arm: Arm) -> Family:
    return next(f for f in self.families if any(arm is a for a in f.arms))


def frontier(all_arms: list[Arm], reference: str = 'bottleneck'
             ) -> Frontier | None:
  """The sweep's frontier; None unless two families ran at >= 2 widths.

  The reference family is the one named ``reference``, else the one holding
  the arm of that label, else the first of that kind.
  """
  if not all_arms:
    return None
  epochs = collections.Counter(
      a.epochs for a in all_arms for _ in a.runs).most_common(1)[0][0]
  fams = [f for f in families(all_arms) if f.at(epochs)]
  if sum(len(f.at(epochs)) >= 2 for f in fams) < 2:
    return None
  ref = (next((f for f in fams if f.name == reference), None) or
         next((f for f in fams if any(a.label == reference for a in f.arms)),
              None) or
         next((f for f in fams if f.kind == reference), None))
  return Frontier(epochs, fams, ref)


def _platform(run: RunResult) -> str:
  s = run.summary
  return ' on '.join(str(s[k]) for k in ('device_kind', 'cpu')
                     if s.get(k)) or 'unrecorded'


def frontier_mixing(fr: Frontier) -> str:
  """'' when the frontier's runs share one commit and one platform.

  Otherwise what differs, e.g. '2 git commits (abc, def)'. Every run of its
  families counts, the schedule check's too.
  """
  runs = [r for f in fr.families for a in f.arms for r in a.runs]
  commits = sorted({str(r.summary.get('git_commit') or 'unrecorded')
                    for r in runs})
  platforms = sorted({_platform(r) for r in runs})
  problems = []
  if len(commits) > 1:
    problems.append(f'{len(commits)} git commits ({", ".join(commits)})')
  if len(platforms) > 1:
    problems.append(f'{len(platforms)} platforms ({"; ".join(platforms)})')
  return ' and '.join(problems)


def equal_macs(fr: Frontier) -> list[stats.FrontierComparison]:
  """Each family against the reference at the MACs budgets both span.

  The budgets are the measured MACs of either family inside both families'
  MACs ranges; each family's accuracy there is read off its frontier.
  """
  ref = fr.reference
  if ref is None:
    return []
  ref_arms = ref.at(fr.epochs)
  ref_xs = [a.macs for a in ref_arms]
  out = []
  for fam in fr.families:
    if fam is ref:
      continue
    fam_arms = fam.at(fr.epochs)
    xs = [a.macs for a in fam_arms]
    low, high = max(xs[0], ref_xs[0]), min(xs[-1], ref_xs[-1])
    for macs in sorted({m for m in xs + ref_xs if low <= m <= high}):
      out.append(stats.frontier_difference(
          fam.name, macs, xs, [a.final_accuracies() for a in fam_arms],
          ref.name, ref_xs, [a.final_accuracies() for a in ref_arms]))
  return out


@dataclasses.dataclass
class ScheduleCheck:
  """A family against the reference at one width each, on two schedules."""
  family: str
  reference: str
  width: float
  ref_width: float
  comparisons: list[tuple[float, stats.Comparison]]  # (epochs, comparison)
  change: stats.Contrast  # the difference at the second minus at the first

  def sentence(self) -> str:
    """Whether the difference moves with the schedule; only if the CI says."""
    (e0, _), (e1, _) = self.comparisons
    c = self.change
    who = f'{self.family} − {self.reference}'
    within = f'From {_g(e0)} to {_g(e1)} epochs'
    if math.isnan(c.ci_low):
      return (f'{within}, {who}: too few seeds to bound the change '
              f' ({100 * c.estimate:+.2f} points).')
    text = c.points()
    if c.significant:
      return f'{within}, the difference {who} moves by {text}.'
    return (f'{within}, the change of the difference {who} is not '
            f'distinguishable from zero (the 95% CI contains zero: {text}).')


def schedule_checks(fr: Frontier) -> list[ScheduleCheck]:
  """Families against the reference at each width run on a second schedule.

  A family's width is paired with the reference's width of closest MACs
  among those that ran both schedules too.
  """
  ref = fr.reference
  if ref is None:
    return []
  others = dict.fromkeys(a.epochs for f in fr.families for a in f.arms
                         if a.epochs != fr.epochs)

  def both(fam, epochs):  # [(main arm, arm at epochs)] at the same width
    at = {a.width: a for a in fam.at(epochs)}
    return [(a, at[a.width]) for a in fam.at(fr.epochs) if a.width in at]

  checks = []
  for epochs in others:
    ref_pairs = both(ref, epochs)
    for fam in fr.families:
      if fam is ref or not ref_pairs:
        continue
      for main, other in both(fam, epochs):
        ref_main, ref_other = min(
            ref_pairs, key=lambda p, m=main: abs(math.log(p[0].macs / m.macs)))
        comps = [(e, stats.compare(
            f'{fam.name} (width {_g(a.width)}, {_g(e)} epochs)',
            a.final_accuracies(),
            f'{ref.name} (width {_g(b.width)}, {_g(e)} epochs)',
            b.final_accuracies()))
                 for e, a, b in ((fr.epochs, main, ref_main),
                                 (epochs, other, ref_other))]
        change = stats.contrast(
            [other.final_accuracies(), ref_other.final_accuracies(),
             main.final_accuracies(), ref_main.final_accuracies()],
            [1, -1, -1, 1])
        checks.append(ScheduleCheck(fam.name, ref.name, main.width,
                                    ref_main.width, comps, change))
  return checks


def narrow_note(fr: Frontier) -> str:
  """The hollow points' footnote ('' when none is)."""
  narrow = [a for a in fr.arms if a.narrow]
  if not narrow:
    return ''
  return (f'Hollow points: the narrowest branch has fewer than '
          f'{NARROW_CHANNELS} output channels (' + '; '.join(
              f'{fr.family_of(a).name} width {_g(a.width)}: '
              f'{a.shape.narrowest[1]} ch in {a.shape.narrowest[0]}'
              for a in narrow) + ').')


def _g(v) -> str:
  """A width or a number of epochs, short ('0.125', '8'; '?' if unrecorded)."""
  return f'{v:g}' if _number(v) else '?'


def _ci(low: float, high: float, scale: float = 100) -> str:
  if math.isnan(low):
    return ''
  return f'[{scale * low:+.2f}, {scale * high:+.2f}]'


def _frontier_markdown(fr: Frontier, mixing: str, refused: bool,
                       speed: dict | None = None) -> list[str]:
  """results.md's frontier sections (or why it is not drawn)."""
  md = ['', f'## Frontier ({_g(fr.epochs)} epochs, frontier.png)', '']
  if refused:
    return md + [f'Not drawn: its runs come from {mixing}; a frontier '
                 'compares one code on one machine. `python -m '
                 'inception.sweeps.report DIR --allow_mixed` draws it anyway.']
  if mixing:
    md += [f'**Drawn with --allow_mixed: its runs come from {mixing}; '
           'accuracy and images/s are not from one code on one machine.**',
           '']
  rows = arm_rows(fr.arms, None)
  for row, arm in zip(rows, fr.arms):
    row.update(family=fr.family_of(arm).name, width=_g(arm.width),
               hollow='yes' if arm.narrow else '')
    if arm.side_by_side:
      row['side_by_side_images_per_s'] = f'{arm.side_by_side:.1f}'
  timed = any(a.side_by_side for a in fr.arms)
  md += [_markdown(['family', 'width', 'seeds', 'macs', 'narrowest_branch',
                    'hollow', 'final_accuracy', '95%_ci', 'train_flops',
                    'images_per_s', *(['side_by_side_images_per_s']
                                      if timed else [])], rows)]
  if timed:
    md += ['', f'images_per_s: as each arm\'s runs logged it (mean), on '
           'whatever machine and load they had; side_by_side_images_per_s: '
           f'every arm\'s train step timed in one process on {speed["cpu"]}, '
           f'{speed["timing"]} taken round-robin ({speed["date"]}, commit '
           f'{speed["git_commit"]}, benchmarks/sweep_speed.py), which the '
           'figure\'s third panel plots.']
  note = narrow_note(fr)
  if note:
    md += ['', note]
  comps = equal_macs(fr)
  if comps:
    md += ['', f'## Accuracy at equal MACs (against {fr.reference.name}, '
           f'{_g(fr.epochs)} epochs)', '',
           'Each family\'s accuracy read off its frontier, linear in log MACs '
           'between the two measured widths around the budget (the point '
           'itself where measured); 95% CI: percentile bootstrap over seeds, '
           'each width\'s seeds resampled on their own (with few seeds it is '
           'narrower than a Student-t interval).', '',
           _markdown(['family', 'reference', 'macs', 'accuracy',
                      'reference_accuracy', 'difference', '95%_ci'], [
                          {'family': c.family, 'reference': c.reference,
                           'macs': c.macs, 'accuracy': f'{c.accuracy:.4f}',
                           'reference_accuracy': f'{c.ref_accuracy:.4f}',
                           'difference': f'{100 * c.diff.estimate:+.2f} points',
                           '95%_ci': _ci(c.diff.ci_low, c.diff.ci_high)}
                          for c in comps]), '']
    md += [f'- {c.sentence()}' for c in comps]
  checks = schedule_checks(fr)
  if checks:
    md += ['', f'## Schedule check (against {fr.reference.name}, Welch '
           't-test per schedule)', '',
           _markdown(['family', 'width', 'reference', 'reference_width',
                      'num_epochs', 'difference', '95%_ci', 'p'], [
                          {'family': k.family, 'width': _g(k.width),
                           'reference': k.reference,
                           'reference_width': _g(k.ref_width),
                           'num_epochs': _g(e),
                           'difference': f'{100 * c.diff:+.2f} points',
                           '95%_ci': _ci(c.ci_low, c.ci_high),
                           'p': (f'{c.p_value:.3g}'
                                 if not math.isnan(c.p_value) else '')}
                          for k in checks for e, c in k.comparisons]), '']
    md += [f'- {c.sentence()}' for k in checks for _, c in k.comparisons]
    md += [f'- {k.sentence()}' for k in checks]
  return md


def provenance_note(runs: list[RunResult]) -> str:
  """'' when every finished run shares one commit and one CPU; else a warning."""
  done = [r for r in runs if r.status == 'done' and r.summary]
  commits = {r.summary.get('git_commit') for r in done}
  cpus = {r.summary.get('cpu') for r in done}
  problems = []
  if len(commits) > 1 or None in commits:
    problems.append(f'{len(commits)} code commits')
  if len(cpus) > 1 or None in cpus:
    problems.append(f'{len(cpus)} CPU models')
  if not done or not problems:
    return ''
  return ('mixed provenance: ' + ' and '.join(problems) +
          ' (or unrecorded); wall times and images/s are not comparable')


def _markdown_report(runs, all_arms, ref, fr=None, mixing='',
                     refused=False, speed=None) -> str:
  rows = [r.row() for r in runs]
  md = ['# Results', '']
  if all_arms:
    top5 = ['top5_accuracy'] if any(a.top5_accuracies()
                                    for a in all_arms) else []
    md += ['## Mean ± std over seeds, 95% CI (Student t)', '',
           _markdown(['arm', 'seeds', 'params', 'macs', 'macs_vs_ref',
                      'narrowest_branch', 'final_accuracy', '95%_ci', *top5,
                      'train_flops', 'images_per_s'],
                     arm_rows(all_arms, ref))]
  if ref is not None and len(all_arms) > 1:
    comps = comparisons(all_arms, ref)
    md += ['', f'## Against {ref.label} (final eval accuracy, Welch t-test)',
           '', _markdown(['arm', 'difference', '95%_ci', 'p'], [
               {'arm': c.arm, 'difference': f'{100 * c.diff:+.2f} points',
                '95%_ci': (f'[{100 * c.ci_low:+.2f}, {100 * c.ci_high:+.2f}]'
                           if not math.isnan(c.ci_low) else ''),
                'p': f'{c.p_value:.3g}' if not math.isnan(c.p_value) else ''}
               for c in comps]), '']
    md += [f'- {c.sentence()}' for c in comps]
  shaped = [a for a in all_arms if a.shape and a.shape.branches]
  if shaped:
    blocks = list(shaped[0].shape.branches)
    md += ['', '## Branch widths per Inception block', '',
           'Live branches in order #1x1 / #3x3 reduce / #3x3 / #5x5 reduce /'
           ' #5x5 / pool proj (reduces and pool proj only where present).', '',
           _markdown(['arm', *blocks], [
               {'arm': a.label, **{b: '/'.join(map(str, a.shape.branches[b]))
                                   for b in blocks}} for a in shaped])]
    degenerate = [a.label for a in shaped if a.shape.degenerate]
    if degenerate:
      md += ['', f'Degenerate arms (a branch whose output has <= '
             f'{budget.DEGENERATE_CHANNELS} channels): {", ".join(degenerate)}.']
  if fr is not None:
    md += _frontier_markdown(fr, mixing, refused, speed)
  md += ['', '## Runs', '',
         _markdown([h for h in _columns(rows) if h != 'error'], rows)]
  note = provenance_note(runs)
  if note:
    md += ['', f'**Warning: {note}.**']
  for status, title in (('failed', 'Failed runs'),
                        ('unreadable', 'Unreadable runs')):
    listed = [r for r in rows if r['status'] == status]
    if listed:
      md += ['', f'## {title}', ''] + [
          f'- {one_line(r["run"])}: {one_line(r["error"]).strip()}'
          for r in listed]
  return '\n'.join(md) + '\n'


class ReportNotWritten(UserError):
  """The report could not be written; ``table`` holds its text."""

  def __init__(self, message: str, table: str):
    super().__init__(message)
    self.table = table


def write_report(workdir: str, reference: str = 'bottleneck', warn=_warn,
                 allow_mixed: bool = False) -> dict[str, str]:
  """Writes the report files into ``workdir``; returns their paths.

  ``frontier.png`` is among them where the sweep has a frontier
  (``frontier``) and it is drawn.

  Raises:
    UserError: nothing to report (``load_runs``); or, after writing the rest
      of the report, a frontier whose runs mix commits or platforms without
      ``allow_mixed``.
    ReportNotWritten: a file could not be written (a read-only folder, a
      full disk); it carries the tables, to print instead.
  """
  runs = load_runs(workdir, warn)
  all_arms = arms(runs)
  speed = cost.read_speed(workdir)
  if speed:  # all arms or none: one panel never mixes two kinds of rates
    rates = [speed['rates'].get(cost.speed_key(a.runs[0].config))
             for a in all_arms]
    if None in rates:
      warn(f'{cost.SPEED_FILE} in {workdir} lacks {rates.count(None)} '
           'arm(s) finished since; plotting the runs\' logged images/s: rerun '
           f'benchmarks/sweep_speed.py {workdir}')
      speed = None
    else:
      for arm, rate in zip(all_arms, rates):
        arm.side_by_side = rate
  ref = reference_arm(all_arms, reference)
  fr = frontier(all_arms, reference)
  mixing = frontier_mixing(fr) if fr else ''
  refused = bool(mixing) and not allow_mixed
  paths = {k: os.path.join(workdir, f) for k, f in (
      ('csv', 'results.csv'), ('md', 'results.md'), ('pareto', 'pareto.png'),
      ('curves', 'curves.png'), ('time', 'time.png'))}
  frontier_path = os.path.join(workdir, 'frontier.png')
  rows = [r.row() for r in runs]
  table = _markdown_report(runs, all_arms, ref, fr, mixing, refused, speed)
  try:
    with open(paths['csv'], 'w', newline='', encoding='utf-8') as f:
      writer = csv.DictWriter(f, _columns(rows))
      writer.writeheader()
      writer.writerows(rows)
    with open(paths['md'], 'w', encoding='utf-8') as f:
      f.write(table)
    with warnings.catch_warnings():  # a sweep with no finished arm yet
      warnings.filterwarnings('ignore', 'No artists with labels')
      plots.plot_pareto(all_arms, paths['pareto'])
      plots.plot_curves(all_arms, paths['curves'])
      plots.plot_time(all_arms, paths['time'], note=provenance_note(runs))
    if fr is not None and not refused:
      paths['frontier'] = frontier_path
      note = ' '.join(filter(None, [narrow_note(fr), mixing and (
          f'Drawn with --allow_mixed: {mixing}.')]))
      plots.plot_frontier(fr.families, fr.epochs, frontier_path, note=note,
                          speed_on=speed['cpu'] if speed else '')
    else:  # not one from an earlier report either
      with contextlib.suppress(FileNotFoundError):
        os.remove(frontier_path)
  except OSError as e:
    raise ReportNotWritten(
        f'cannot write the report into {workdir} ({e.strerror or e}); the '
        'tables are printed above: fix the folder\'s permissions or free '
        'space, then run python report.py again', table) from None
  if refused:
    raise UserError(
        f'not drawing the frontier of {workdir}: its runs come from {mixing};'
        ' the rest of the report is written; run python report.py '
        f'{workdir} --allow_mixed to draw it anyway')
  return paths


def format_summary(paths: dict[str, str]) -> str:
  """The results tables and the files' paths, as printed after a sweep."""
  with open(paths['md'], encoding='utf-8') as f:
    table = f.read()
  return (f'{table}\nresults: {paths["csv"]}\n         {paths["md"]}\n'
          f'plots:   {paths["pareto"]}\n         {paths["curves"]}\n'
          f'         {paths["time"]}' + (
              f'\n         {paths["frontier"]}' if 'frontier' in paths
              else ''))
