"""The report's accuracy-vs-MACs frontiers, on a fabricated frontier sweep."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from inception.sweeps import cost, plots, report
from inception.training import workdir

# (family, width) -> (MACs per image, accuracies over seeds), 8 epochs.
MAIN = {('bottleneck', 0.078125): (9_630_880, [0.74, 0.75, 0.76]),
        ('bottleneck', 0.125): (23_194_880, [0.78, 0.79, 0.80]),
        ('naive', 0.0234): (9_500_000, [0.70, 0.71, 0.72]),
        ('naive', 0.04): (22_000_000, [0.74, 0.76, 0.75]),
        ('separable', 0.125): (10_180_224, [0.73, 0.75, 0.74]),
        ('separable', 0.1875): (21_000_000, [0.77, 0.775, 0.78])}
LONG = {('bottleneck', 0.078125): [0.80, 0.81, 0.82],  # 24 epochs
        ('naive', 0.0234): [0.78, 0.79, 0.775]}
DESIGN = {'bottleneck': (True, True, False), 'naive': (False, False, False),
          'separable': (True, True, True)}
LR = {'bottleneck': 0.2, 'naive': 0.1, 'separable': 0.4}


def _run(root, family, width, seed, accuracy, macs, epochs=None,
         commit='abc', device='cpu'):
  """One finished run's files, as a run of the frontier sweep writes them."""
  bottleneck, pool_proj, separable = DESIGN[family]
  overrides = {'model.bottleneck': bottleneck, 'model.pool_proj': pool_proj,
               'model.separable': separable, 'model.width': width,
               'learning_rate': LR[family], 'seed': seed,
               'train_split': 'train[:90%]', 'eval_split': 'train[90%:]'}
  if epochs:
    overrides['num_epochs'] = epochs
  name = f'{family}_{width}_{epochs or 8}ep_seed{seed}'
  d = os.path.join(root, name)
  os.makedirs(d)
  workdir.write_json(os.path.join(d, workdir.CONFIG), {
      'model': {'name': 'googlenet_cifar', 'bottleneck': bottleneck,
                'pool_proj': pool_proj, 'separable': separable,
                'aux_logits': False, 'width': width, 'num_classes': 10},
      'seed': seed, 'learning_rate': LR[family], 'batch_size': 128,
      'num_epochs': epochs or 8, 'image_size': 32, 'channels': 3,
      'dtype': 'float32', 'conv_impl': 'auto'})
  step = 350 * (epochs or 8)
  workdir.write_json(os.path.join(d, workdir.SUMMARY), {
      'status': 'done', 'step': step, 'params': 10, 'macs': macs,
      'final_eval_accuracy': accuracy, 'best_eval_accuracy': accuracy,
      'train_time_s': 10.0, 'wall_time_s': 20.0,
      'images_per_s': 1e11 / macs + seed, 'seed': seed, 'git_commit': commit,
      'cpu': 'Intel(R) Xeon(R) Processor', 'device_kind': device})
  workdir.write_json(os.path.join(d, workdir.RUN_STATUS), {'status': 'done'})
  with open(os.path.join(d, workdir.METRICS), 'w', encoding='utf-8') as f:
    for s in (step // 2, step):
      f.write(json.dumps({'step': s, 'eval/accuracy': accuracy * s / step,
                          'eval/wall_time_s': s / 10}) + '\n')
  return {'name': name, 'overrides': overrides}


def _sweep(root):
  entries = []
  for seed in range(3):
    for (family, width), (macs, accs) in MAIN.items():
      entries.append(_run(root, family, width, seed, accs[seed], macs))
  for seed in range(3):
    for (family, width), accs in LONG.items():
      entries.append(_run(root, family, width, seed, accs[seed],
                          MAIN[family, width][0], epochs=24))
  workdir.write_json(os.path.join(root, workdir.MANIFEST), {'runs': entries})
  return root


@pytest.fixture(name='sweep')
def _sweep_fixture(tmp_path):
  return _sweep(str(tmp_path / 'frontier'))


def _md(root):
  with open(os.path.join(root, 'results.md'), encoding='utf-8') as f:
    return f.read()


def _interpolated(macs, points):
  """A hand computation: linear in log MACs between the bracketing points."""
  (x0, y0), (x1, y1) = points
  t = (math.log(macs) - math.log(x0)) / (math.log(x1) - math.log(x0))
  return y0 + t * (y1 - y0)


def test_a_frontier_sweep_draws_its_frontier_and_equal_macs_table(sweep):
  paths = report.write_report(sweep)
  with open(paths['frontier'], 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  fr = report.frontier(report.arms(report.load_runs(sweep)))
  assert fr.epochs == 8 and fr.reference.name == 'bottleneck'
  assert [f.name for f in fr.families] == ['bottleneck', 'naive', 'separable']
  assert all(a.epochs == 8 for a in fr.arms) and len(fr.arms) == 6
  mean = {k: np.mean(v[1]) for k, v in MAIN.items()}
  b = [(MAIN['bottleneck', w][0], mean['bottleneck', w])
       for w in (0.078125, 0.125)]
  n = [(MAIN['naive', w][0], mean['naive', w]) for w in (0.0234, 0.04)]
  s = [(MAIN['separable', w][0], mean['separable', w])
       for w in (0.125, 0.1875)]
  # Budgets inside both spans: naive [9.5M, 22M] and bottleneck [9.6M, 23.2M]
  # share 9.6M (bottleneck's point) and 22M (naive's).
  expected = [('naive', b[0][0], _interpolated(b[0][0], n), b[0][1]),
              ('naive', n[1][0], n[1][1], _interpolated(n[1][0], b)),
              ('separable', s[0][0], s[0][1], _interpolated(s[0][0], b)),
              ('separable', s[1][0], s[1][1], _interpolated(s[1][0], b))]
  comps = report.equal_macs(fr)
  assert [(c.family, c.macs) for c in comps] == [e[:2] for e in expected]
  for c, (_, _, acc, ref_acc) in zip(comps, expected):
    assert c.accuracy == pytest.approx(acc)
    assert c.ref_accuracy == pytest.approx(ref_acc)
    assert c.diff.estimate == pytest.approx(acc - ref_acc)
    assert c.diff.ci_low <= c.diff.estimate <= c.diff.ci_high
  assert report.equal_macs(fr)[0].diff == comps[0].diff  # a fixed seed
  md = _md(sweep)
  assert '## Accuracy at equal MACs (against bottleneck, 8 epochs)' in md
  assert f'| naive | bottleneck | {b[0][0]:,} |' in md
  for c in comps:
    sentence = c.sentence()
    assert f'- {sentence}' in md
    if not c.diff.significant:
      assert 'not distinguishable (the 95% CI contains zero' in sentence
      assert 'higher' not in sentence and 'better' not in sentence
  for table in md.split('\n\n'):  # every table keeps its columns
    rows = [l for l in table.splitlines() if l.startswith('|')]
    assert len({r.count('|') for r in rows}) <= 1, table


def test_narrow_points_are_hollow_on_the_figure_and_footnoted(sweep):
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fr = report.frontier(report.arms(report.load_runs(sweep)))
  narrow = {a.label: a.narrow for a in fr.arms}
  # From the networks' branch widths (budget.describe): bottleneck at 5/64
  # has a 3-channel branch, at 1/8 its narrowest has 4.
  assert narrow[next(l for l in narrow if 'naive, width 0.0234' in l)]
  assert narrow[next(l for l in narrow if 'bottleneck, width 0.078125' in l)]
  assert not narrow[next(l for l in narrow if 'bottleneck, width 0.125' in l)]
  axes = Figure().subplots(1, 3)
  plots.plot_frontier(fr.families, fr.epochs, axes=axes,
                      note=report.narrow_note(fr))
  for ax, key in zip(axes, ('macs', 'train_flops', 'speed')):
    points = [c.lines[0] for c in ax.containers]  # errorbars' markers
    hollow = sorted(float(l.get_xdata()[0]) for l in points
                    if l.get_markerfacecolor() == 'none')
    assert len(points) == 6
    assert hollow == pytest.approx(sorted(getattr(a, key) for a in fr.arms
                                          if a.narrow))
  report.write_report(sweep)
  md = _md(sweep)
  assert '| naive | 0.0234 |' in md
  assert 'Hollow points: the narrowest branch has fewer than 4 output' in md
  assert 'bottleneck, width 0.078125' in md.split('Hollow points')[1]


def test_the_schedule_check_compares_the_families_at_both_lengths(sweep):
  report.write_report(sweep)
  md = _md(sweep)
  assert '## Schedule check (against bottleneck' in md
  table = md.split('## Schedule check')[1].split('\n\n')[1]
  rows = [l for l in table.splitlines() if l.startswith('| naive')]
  assert [r.split(' | ')[4] for r in rows] == ['8', '24']
  naive_long, ref_long = LONG['naive', 0.0234], LONG['bottleneck', 0.078125]
  diff = 100 * (np.mean(naive_long) - np.mean(ref_long))
  assert f'{diff:+.2f} points' in rows[1]
  assert 'From 8 to 24 epochs' in md
  # The 24-epoch runs are not on the frontier.
  fr = report.frontier(report.arms(report.load_runs(sweep)))
  assert all(a.epochs == 8 for a in fr.arms)


def test_mixed_commits_are_refused_unless_allowed(sweep):
  summary = os.path.join(sweep, 'naive_0.04_8ep_seed1', workdir.SUMMARY)
  workdir.write_json(summary, {**workdir.read_json(summary),
                               'git_commit': 'def'})
  with pytest.raises(report.UserError, match='2 git commits .*--allow_mixed'):
    report.write_report(sweep)
  assert not os.path.exists(os.path.join(sweep, 'frontier.png'))
  md = _md(sweep)  # the rest of the report is written
  assert 'Not drawn: its runs come from 2 git commits (abc, def)' in md
  assert 'mixed provenance: 2 code commits' in md  # the runs' own warning
  refused = subprocess.run([sys.executable, 'report.py', sweep], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
  lines = [l for l in refused.stderr.splitlines() if l.strip()]
  assert refused.returncode == 2 and len(lines) == 1, refused.stderr
  assert lines[0].startswith('error: not drawing the frontier')
  allowed = subprocess.run([sys.executable, 'report.py', sweep,
                            '--allow_mixed'], cwd=REPO, capture_output=True,
                           text=True, timeout=300)
  assert allowed.returncode == 0, allowed.stderr
  assert os.path.exists(os.path.join(sweep, 'frontier.png'))
  assert '**Drawn with --allow_mixed: its runs come from 2 git commits' in (
      _md(sweep))
  # A second platform is refused too.
  workdir.write_json(summary, {**workdir.read_json(summary),
                               'git_commit': 'abc', 'device_kind': 'TPU v5'})
  with pytest.raises(report.UserError, match='2 platforms'):
    report.write_report(sweep)


def test_one_family_at_several_widths_draws_no_frontier(tmp_path):
  """As in the published ablation: only the naive arm has two widths."""
  root = str(tmp_path / 'ablation')
  entries = [_run(root, family, width, seed, MAIN[family, width][1][seed],
                  MAIN[family, width][0])
             for seed in range(2) for family, width in (
                 ('bottleneck', 0.125), ('naive', 0.0234), ('naive', 0.04),
                 ('separable', 0.125))]
  workdir.write_json(os.path.join(root, workdir.MANIFEST), {'runs': entries})
  paths = report.write_report(root)
  assert 'frontier' not in paths
  assert not os.path.exists(os.path.join(root, 'frontier.png'))
  assert '## Frontier' not in _md(root)


def test_nin_families_are_named_in_nin_terms(tmp_path):
  """NiN's ablation compares the mlpconv block with a plain CNN, not
  GoogLeNet's bottleneck and naive modules."""
  root = str(tmp_path / 'nin')
  entries = [_run(root, family, width, seed, MAIN[family, width][1][seed],
                  MAIN[family, width][0])
             for seed in range(2) for family, width in (
                 ('bottleneck', 0.078125), ('bottleneck', 0.125),
                 ('naive', 0.0234), ('naive', 0.04))]
  for entry in entries:
    path = os.path.join(root, entry['name'], workdir.CONFIG)
    config = workdir.read_json(path)
    config['model'] = {'name': 'nin_cifar', 'bottleneck':
                       entry['overrides']['model.bottleneck'],
                       'width': entry['overrides']['model.width']}
    workdir.write_json(path, config)
    for k in ('model.pool_proj', 'model.separable'):
      del entry['overrides'][k]
  workdir.write_json(os.path.join(root, workdir.MANIFEST), {'runs': entries})
  fr = report.frontier(report.arms(report.load_runs(root)))
  assert [f.name for f in fr.families] == ['mlpconv', 'plain']
  assert fr.reference.name == 'mlpconv'
  assert [a.kind for a in fr.arms] == ['bottleneck'] * 2 + ['naive'] * 2


def test_top5_is_reported_where_the_runs_recorded_it(tmp_path):
  root = str(tmp_path / 'top5')
  entries = [_run(root, 'bottleneck', 0.078125, seed, 0.7 + seed / 100,
                  9_630_880) for seed in range(2)]
  workdir.write_json(os.path.join(root, workdir.MANIFEST), {'runs': entries})
  report.write_report(root)
  assert 'top5_accuracy' not in _md(root)  # as the published sweeps
  for seed, entry in enumerate(entries):
    path = os.path.join(root, entry['name'], workdir.SUMMARY)
    with open(path, encoding='utf-8') as f:
      summary = json.load(f)
    workdir.write_json(path, {**summary,
                              'final_eval_top5_accuracy': 0.95 + seed / 100})
  report.write_report(root)
  md = _md(root)
  assert '| 95%_ci | top5_accuracy |' in md
  assert '0.9550 ± 0.0071' in md
  with open(os.path.join(root, 'results.csv'), encoding='utf-8') as f:
    header = f.readline().strip().split(',')
  assert header[header.index('final_accuracy') + 1] == 'final_top5_accuracy'


def test_side_by_side_speed_replaces_the_runs_logged_images_per_s(sweep):
  """A speed.json (benchmarks/sweep_speed.py) sets the third panel's x."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  runs = report.load_runs(sweep)
  fr = report.frontier(report.arms(runs))
  logged = {a.label: a.images_per_s for a in fr.arms}
  keys = {a.label: cost.speed_key(a.runs[0].config) for a in fr.arms}
  assert len(set(keys.values())) == 6  # one step shape per point
  timed = {label: 100.0 + 10 * i for i, label in enumerate(sorted(keys))}
  workdir.write_json(os.path.join(sweep, cost.SPEED_FILE), {
      'cpu': 'AMD EPYC', 'date': '2026-12-06', 'git_commit': 'abcdef0123',
      'num_steps': 10, 'rounds': 5, 'arms': [
          {'key': keys[label], 'run': label, 'images_per_s': rate}
          for label, rate in timed.items()]})
  report.write_report(sweep)
  md = _md(sweep)
  assert '| images_per_s | side_by_side_images_per_s |' in md
  assert 'timed in one process on AMD EPYC, median of 5 rounds of 10 steps' in md
  fr = report.frontier(report.arms(report.load_runs(sweep)))
  speed = cost.read_speed(sweep)
  for a in fr.arms:
    a.side_by_side = speed['rates'][cost.speed_key(a.runs[0].config)]
    assert a.speed == timed[a.label] != logged[a.label]
  # The 24-epoch arms share their 8-epoch twins' step: the same rate.
  for arm in report.arms(report.load_runs(sweep)):
    assert cost.speed_key(arm.runs[0].config) in speed['rates']
  axes = Figure().subplots(1, 3)
  plots.plot_frontier(fr.families, fr.epochs, axes=axes, speed_on='AMD EPYC')
  xs = sorted(float(c.lines[0].get_xdata()[0]) for c in axes[2].containers)
  assert xs == sorted(timed.values())
  assert 'timed side by side, AMD EPYC' in axes[2].get_xlabel()
  # A speed file that misses an arm is not used: one panel, one kind of rate.
  workdir.write_json(os.path.join(sweep, cost.SPEED_FILE), {
      'cpu': 'AMD EPYC', 'num_steps': 10, 'rounds': 5,
      'arms': [{'key': keys[label], 'images_per_s': timed[label]}
               for label in sorted(keys)[1:]]})
  warned = []
  report.write_report(sweep, warn=warned.append)
  # The missing step is also its 24-epoch twin's: two arms lack a rate.
  assert 'lacks 2 arm(s) finished since' in warned[0]
  assert 'side_by_side_images_per_s' not in _md(sweep)
  with open(os.path.join(sweep, cost.SPEED_FILE), 'w', encoding='utf-8') as f:
    f.write('{"arms": [{"key": "x"}]}')
  with pytest.raises(report.UserError, match='not a side-by-side speed file'):
    report.write_report(sweep)
