"""Sweep report: results.csv / results.md, pareto.png and curves.png.

  python -m inception.report runs/ablation

One row per run (its overrides, params and MACs per image, final and best
eval accuracy, train time, images/s, seed, status), a mean ± std table over
seeds, eval accuracy against MACs (log scale), and eval accuracy curves.
"""
import csv
import dataclasses
import json
import math
import os
import sys

import numpy as np

from inception import metrics, sweep

COLUMNS = ('run', 'status', 'seed', 'params', 'macs', 'final_accuracy',
           'best_accuracy', 'train_time_s', 'images_per_s', 'error')


@dataclasses.dataclass
class RunResult:
  """What a run directory says about the run."""
  name: str
  workdir: str
  overrides: dict
  status: str
  summary: dict
  config: dict
  curve: list[tuple[int, float]]  # (step, eval accuracy)
  error: str = ''

  @property
  def seed(self):
    return self.summary.get('seed', self.config.get('seed'))

  def row(self) -> dict:
    s = self.summary
    return {'run': self.name, 'status': self.status, 'seed': self.seed,
            **{k: v for k, v in self.overrides.items() if k != 'seed'},
            'params': s.get('params'), 'macs': s.get('macs'),
            'final_accuracy': s.get('final_eval_accuracy'),
            'best_accuracy': s.get('best_eval_accuracy'),
            'train_time_s': s.get('train_time_s'),
            'images_per_s': s.get('images_per_s'), 'error': self.error}

  @property
  def variant(self) -> str:
    """'bottleneck' or 'naive' (no 1x1 reductions), for plot markers."""
    model = self.config.get('model', {})
    return 'bottleneck' if model.get('bottleneck', True) else 'naive'


def _read_json(path):
  if not os.path.exists(path):
    return {}
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def load_runs(workdir: str) -> list[RunResult]:
  """Every run of a sweep directory (from its manifest, else its subdirs)."""
  manifest = _read_json(os.path.join(workdir, sweep.MANIFEST))
  entries = manifest.get('runs') or [
      {'name': d, 'overrides': {}} for d in sorted(os.listdir(workdir))
      if os.path.isdir(os.path.join(workdir, d))]
  runs = []
  for entry in entries:
    d = os.path.join(workdir, entry['name'])
    summary = _read_json(os.path.join(d, 'summary.json'))
    status = _read_json(os.path.join(d, sweep.RUN_STATUS))
    state = status.get('status') or ('done' if summary else 'pending')
    curve = [(r['step'], r['eval/accuracy']) for r in
             metrics.read_jsonl(os.path.join(d, metrics.METRICS_FILE))
             if 'eval/accuracy' in r]
    runs.append(RunResult(entry['name'], d, entry['overrides'], state,
                          summary, _read_json(os.path.join(d, 'config.json')),
                          curve, status.get('error', '')))
  return runs


def _fmt(v) -> str:
  if v is None:
    return ''
  if isinstance(v, float):
    return f'{v:.4f}' if abs(v) < 10 else f'{v:,.1f}'
  if isinstance(v, int) and not isinstance(v, bool):
    return f'{v:,}'
  return str(v).replace('|', '/').replace('\n', ' ')


def _markdown(header, rows) -> str:
  out = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  out += ['| ' + ' | '.join(_fmt(r.get(h)) for h in header) + ' |'
          for r in rows]
  return '\n'.join(out)


def grouped(runs: list[RunResult]) -> list[dict]:
  """Mean ± std over seeds of the finished runs with the same other overrides."""
  groups = {}
  for r in runs:
    if r.status != 'done':
      continue
    key = json.dumps({k: v for k, v in r.overrides.items() if k != 'seed'},
                     sort_keys=True)
    groups.setdefault(key, []).append(r)
  rows = []
  for key, members in groups.items():
    row = {**json.loads(key), 'seeds': len(members),
           'params': members[0].summary.get('params'),
           'macs': members[0].summary.get('macs')}
    for col, field, digits in (('final_accuracy', 'final_eval_accuracy', 4),
                               ('best_accuracy', 'best_eval_accuracy', 4),
                               ('images_per_s', 'images_per_s', 1)):
      vals = np.array([m.summary.get(field) or math.nan for m in members])
      row[col] = (f'{vals.mean():.{digits}f} ± {vals.std(ddof=1):.{digits}f}'
                  if len(vals) > 1 else f'{vals[0]:.{digits}f}')
    rows.append(row)
  return rows


def plot_pareto(runs: list[RunResult], path: str, ax=None):
  """Eval accuracy against MACs per image (log x), bottleneck vs naive."""
  fig = None
  if ax is None:  # a file: matplotlib's object API, no pyplot, no backend
    from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
  styles = {'bottleneck': ('o', 'tab:blue'), 'naive': ('s', 'tab:red')}
  for variant, (marker, color) in styles.items():
    pts = [(r.summary['macs'], r.summary['final_eval_accuracy'], r.name)
           for r in runs if r.status == 'done' and r.variant == variant]
    if pts:
      ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker,
                 color=color, label=f'{variant} ({len(pts)} runs)', alpha=0.8)
  ax.set_xscale('log')
  ax.set_xlabel('MACs per image (log scale)')
  ax.set_ylabel('final eval accuracy')
  ax.set_title('Accuracy vs compute')
  ax.grid(True, which='both', alpha=0.3)
  ax.legend()
  if fig is not None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_curves(runs: list[RunResult], path: str, ax=None):
  """Eval accuracy against training step, one line per run."""
  fig = None
  if ax is None:  # a file: matplotlib's object API, no pyplot, no backend
    from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
  for r in runs:
    if r.curve:
      ax.plot(*zip(*r.curve), marker='.', label=r.name,
              linestyle='-' if r.variant == 'bottleneck' else '--')
  ax.set_xlabel('training step')
  ax.set_ylabel('eval accuracy')
  ax.set_title('Eval accuracy during training')
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize='small')
  if fig is not None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_report(workdir: str) -> dict[str, str]:
  """Writes the report files into ``workdir``; returns their paths."""
  runs = load_runs(workdir)
  rows = [r.row() for r in runs]
  extra = sorted({k for row in rows for k in row} - set(COLUMNS))
  header = ['run', *extra, *COLUMNS[1:]]
  paths = {k: os.path.join(workdir, f) for k, f in (
      ('csv', 'results.csv'), ('md', 'results.md'), ('pareto', 'pareto.png'),
      ('curves', 'curves.png'))}
  with open(paths['csv'], 'w', newline='', encoding='utf-8') as f:
    writer = csv.DictWriter(f, header)
    writer.writeheader()
    writer.writerows(rows)
  groups = grouped(runs)
  md = ['# Results', '', _markdown([h for h in header if h != 'error'], rows)]
  if groups and any(g['seeds'] > 1 for g in groups):
    gh = [k for k in groups[0] if k not in ('params', 'macs', 'seeds',
                                            'final_accuracy', 'best_accuracy',
                                            'images_per_s')]
    md += ['', '## Mean ± std over seeds', '',
           _markdown([*gh, 'seeds', 'params', 'macs', 'final_accuracy',
                      'best_accuracy', 'images_per_s'], groups)]
  failed = [r for r in rows if r['status'] == 'failed']
  if failed:
    md += ['', '## Failed runs', ''] + [f'- {r["run"]}: {r["error"]}'
                                        for r in failed]
  with open(paths['md'], 'w', encoding='utf-8') as f:
    f.write('\n'.join(md) + '\n')
  plot_pareto(runs, paths['pareto'])
  plot_curves(runs, paths['curves'])
  return paths


def format_summary(workdir: str, paths: dict[str, str]) -> str:
  """The results table and the plot paths, as printed after a sweep."""
  with open(paths['md'], encoding='utf-8') as f:
    table = f.read()
  return (f'{table}\nresults: {paths["csv"]}\n         {paths["md"]}\n'
          f'plots:   {paths["pareto"]}\n         {paths["curves"]}')


def main(argv):
  if len(argv) != 2 or not os.path.isdir(argv[1]):
    print('usage: python -m inception.report SWEEP_WORKDIR', file=sys.stderr)
    sys.exit(2)
  print(format_summary(argv[1], write_report(argv[1])))


if __name__ == '__main__':
  main(sys.argv)
