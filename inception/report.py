"""Sweep report: per-run and per-arm tables with statistics, and three plots.

  python -m inception.report results/cifar10_ablation [--reference bottleneck]

Runs are grouped into arms by their overrides, every one but the seed and
those that do not change the result (how often to log, evaluate and save:
``inception.identity.MUTABLE``): from the sweep's manifest (``sweep.json``)
when there is one, otherwise from the runs' own ``config.json`` (every such
field that differs between runs), so runs started from ``--dry_run`` commands
on a cluster group the same way. A run whose files are not what a run writes
is reported unreadable in one warning line and left out of the arms.

Writes ``results.csv`` (one row per run), ``results.md`` (arms: mean ± std,
95% CI, params, MACs, training FLOPs, images/s; each arm against the
reference arm: difference, 95% CI, Welch's p, one sentence; branch widths;
provenance), ``pareto.png``, ``curves.png`` and ``time.png``.
"""
import argparse
import csv
import dataclasses
import json
import math
import os
import sys
import warnings

import ml_collections

from inception import budget, identity, metrics, plots, specs, stats
from inception import workdir as workdir_lib
from inception.errors import UserError

COLUMNS = ('run', 'arm', 'status', 'seed', 'params', 'macs', 'final_accuracy',
           'best_accuracy', 'train_flops', 'train_time_s', 'wall_time_s',
           'images_per_s', 'git_commit', 'cpu', 'error')
_ARM_FIELDS = ('model.bottleneck', 'model.pool_proj', 'model.separable',
               'model.width')


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

  def final_accuracies(self) -> list[float]:
    return [r.summary.get('final_eval_accuracy') for r in self.runs]

  @property
  def accuracy(self) -> stats.ArmStats:
    return stats.summarize(self.final_accuracies())

  @property
  def macs(self) -> int:
    return self.runs[0].summary.get('macs')

  @property
  def params(self) -> int:
    return self.runs[0].summary.get('params')


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
  if not bottleneck:
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


def _shape(config: dict) -> budget.Shape | None:
  try:
    model = specs.model_spec(ml_collections.ConfigDict(config))
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


def arm_rows(all_arms: list[Arm], ref: Arm | None) -> list[dict]:
  """One row per arm: accuracy mean ± std and 95% CI, cost, speed."""
  rows = []
  for arm in all_arms:
    s = arm.accuracy
    speed = stats.summarize([r.summary.get('images_per_s') for r in arm.runs])
    flops_run = stats.summarize([r.train_flops(r.summary['step'])
                                 for r in arm.runs])
    rows.append({
        'arm': arm.label, 'seeds': s.n, 'params': arm.params,
        'macs': arm.macs,
        'macs_vs_ref': f'{arm.macs / ref.macs:.3f}x' if ref else '',
        'narrowest_branch': (f'{arm.shape.narrowest[1]} ch ({arm.shape.narrowest[0]})'
                             if arm.shape and arm.shape.branches else ''),
        'final_accuracy': (f'{s.mean:.4f} ± {s.std:.4f}' if s.n > 1
                           else f'{s.mean:.4f}'),
        '95%_ci': (f'[{s.ci_low:.4f}, {s.ci_high:.4f}]' if s.n > 1 else ''),
        'train_flops': f'{flops_run.mean:.3g}',
        'images_per_s': f'{speed.mean:.1f}',
    })
  return rows


def comparisons(all_arms: list[Arm], ref: Arm) -> list[stats.Comparison]:
  """Every other arm against the reference arm (final eval accuracy)."""
  return [stats.compare(a.label, a.final_accuracies(), ref.label,
                        ref.final_accuracies())
          for a in all_arms if a is not ref]


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


def _markdown_report(runs, all_arms, ref) -> str:
  rows = [r.row() for r in runs]
  extra = sorted({k for row in rows for k in row} - set(COLUMNS))
  md = ['# Results', '']
  if all_arms:
    md += ['## Mean ± std over seeds, 95% CI (Student t)', '',
           _markdown(['arm', 'seeds', 'params', 'macs', 'macs_vs_ref',
                      'narrowest_branch', 'final_accuracy', '95%_ci',
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
  md += ['', '## Runs', '',
         _markdown([h for h in ('run', *extra, *COLUMNS[1:]) if h != 'error'],
                   rows)]
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


def write_report(workdir: str, reference: str = 'bottleneck',
                 warn=_warn) -> dict[str, str]:
  """Writes the report files into ``workdir``; returns their paths.

  Raises:
    UserError: nothing to report (``load_runs``).
    ReportNotWritten: a file could not be written (a read-only folder, a
      full disk); it carries the tables, to print instead.
  """
  runs = load_runs(workdir, warn)
  all_arms = arms(runs)
  ref = reference_arm(all_arms, reference)
  paths = {k: os.path.join(workdir, f) for k, f in (
      ('csv', 'results.csv'), ('md', 'results.md'), ('pareto', 'pareto.png'),
      ('curves', 'curves.png'), ('time', 'time.png'))}
  rows = [r.row() for r in runs]
  extra = sorted({k for row in rows for k in row} - set(COLUMNS))
  table = _markdown_report(runs, all_arms, ref)
  try:
    with open(paths['csv'], 'w', newline='', encoding='utf-8') as f:
      writer = csv.DictWriter(f, ['run', *extra, *COLUMNS[1:]])
      writer.writeheader()
      writer.writerows(rows)
    with open(paths['md'], 'w', encoding='utf-8') as f:
      f.write(table)
    with warnings.catch_warnings():  # a sweep with no finished arm yet
      warnings.filterwarnings('ignore', 'No artists with labels')
      plots.plot_pareto(all_arms, paths['pareto'])
      plots.plot_curves(all_arms, paths['curves'])
      plots.plot_time(all_arms, paths['time'], note=provenance_note(runs))
  except OSError as e:
    raise ReportNotWritten(
        f'cannot write the report into {workdir} ({e.strerror or e}); the '
        'tables are printed above: fix the folder\'s permissions or free '
        'space, then run python -m inception.report again', table) from None
  return paths


def format_summary(paths: dict[str, str]) -> str:
  """The results tables and the files' paths, as printed after a sweep."""
  with open(paths['md'], encoding='utf-8') as f:
    table = f.read()
  return (f'{table}\nresults: {paths["csv"]}\n         {paths["md"]}\n'
          f'plots:   {paths["pareto"]}\n         {paths["curves"]}\n'
          f'         {paths["time"]}')


def main(argv=None):
  parser = argparse.ArgumentParser(
      prog='python -m inception.report',
      description='Writes a sweep directory\'s results tables and plots.')
  parser.add_argument('workdir', help='the sweep directory')
  parser.add_argument('--reference', default='bottleneck',
                      help='arm the others are compared with: an arm label, '
                      'or a kind (bottleneck, naive, separable)')
  args = parser.parse_args(argv)
  try:
    print(format_summary(write_report(
        os.path.abspath(os.path.expanduser(args.workdir)), args.reference)))
  except ReportNotWritten as e:
    print(e.table, flush=True)
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except OSError as e:  # e.g. a folder that cannot be listed
    print(f'error: cannot read {e.filename or args.workdir} '
          f'({e.strerror or e})', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  main()
