"""Statistics (scipy.stats), compute budgets and report grouping, no training."""
import json
import math
import os

import numpy as np
import pytest
from scipy import stats as sps

from inception.models import budget
from inception.sweeps import cost, report, stats
from inception.training import workdir


def test_summary_is_student_t_interval():
  x = [0.70, 0.72, 0.75]
  s = stats.summarize(x)
  half = sps.t.ppf(0.975, 2) * np.std(x, ddof=1) / math.sqrt(3)
  assert s.n == 3 and s.mean == pytest.approx(np.mean(x))
  assert s.std == pytest.approx(np.std(x, ddof=1))
  assert (s.ci_low, s.ci_high) == pytest.approx((s.mean - half, s.mean + half))
  one = stats.summarize([0.5])
  assert one.n == 1 and math.isnan(one.ci_low)


def test_welch_difference_and_its_sentence():
  a, b = [0.80, 0.81, 0.82], [0.70, 0.71, 0.72]
  c = stats.compare('naive', a, 'bottleneck', b)
  assert c.diff == pytest.approx(0.10)
  assert c.p_value == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue)
  assert c.ci_low > 0 and c.significant
  assert 'higher accuracy' in c.sentence()


def test_a_difference_whose_interval_contains_zero_is_never_called_real():
  c = stats.compare('naive', [0.70, 0.75, 0.72], 'bottleneck',
                    [0.71, 0.74, 0.73])
  assert c.ci_low < 0 < c.ci_high and not c.significant
  text = c.sentence()
  assert 'not distinguishable' in text and 'higher' not in text
  assert 'lower' not in text
  few = stats.compare('x', [0.7], 'y', [0.6, 0.61])
  assert 'too few seeds' in few.sentence()


def test_mean_band_cuts_to_the_shortest_curve():
  x, mean, std = stats.mean_band([[(1, 0.1), (2, 0.3)], [(1, 0.3)]])
  assert list(x) == [1] and mean[0] == pytest.approx(0.2)
  assert std[0] == pytest.approx(np.std([0.1, 0.3], ddof=1))


def test_equal_macs_width_reaches_the_target_and_describes_branches():
  shape = (32, 32, 3)
  target = budget.macs('googlenet_cifar', shape, width=0.125)
  width, reached = budget.equal_macs_width(
      'googlenet_cifar', shape, {'bottleneck': False, 'pool_proj': False},
      target)
  assert abs(reached - target) <= budget.TOLERANCE * target
  naive = budget.describe('googlenet_cifar', shape, bottleneck=False,
                          pool_proj=False, width=width)
  full = budget.describe('googlenet_cifar', shape, width=0.125)
  assert naive.macs == reached and len(naive.branches['3a']) == 3
  assert full.branches['3a'] == (8, 12, 16, 2, 4, 4)  # Table 1 x 1/8
  assert naive.degenerate  # 3a's 5x5 branch is one channel wide
  assert 'DEGENERATE' in budget.format_shape(naive, target)
  with pytest.raises(ValueError, match='within 5%'):
    budget.equal_macs_width('googlenet_cifar', shape, {}, 10)


def _fake_run(root, name, config, accuracy, macs=1000, step=10):
  d = os.path.join(root, name)
  os.makedirs(d)
  workdir.write_json(os.path.join(d, workdir.CONFIG), config)
  workdir.write_json(os.path.join(d, workdir.SUMMARY), {
      'status': 'done', 'step': step, 'params': 10, 'macs': macs,
      'final_eval_accuracy': accuracy, 'best_eval_accuracy': accuracy,
      'train_time_s': 1.0, 'wall_time_s': 2.0, 'images_per_s': 5.0,
      'seed': config['seed'], 'git_commit': 'abc', 'cpu': 'cpu'})
  with open(os.path.join(d, workdir.METRICS), 'w', encoding='utf-8') as f:
    for s in (5, 10):
      f.write(json.dumps({'step': s, 'eval/accuracy': accuracy * s / 10,
                          'eval/wall_time_s': s}) + '\n')


def _config(bottleneck, seed, lr=0.1):
  return {'model': {'name': 'nin_cifar_tiny', 'bottleneck': bottleneck,
                    'width': 1.0, 'num_classes': 10},
          'seed': seed, 'learning_rate': lr, 'batch_size': 4,
          'image_size': 32, 'channels': 3, 'dtype': 'float32',
          'conv_impl': 'auto'}


def test_report_groups_by_config_without_a_manifest(tmp_path):
  """Runs from --dry_run commands have no sweep.json: group by their configs."""
  root = str(tmp_path)
  for seed, (a, b) in enumerate([(0.70, 0.80), (0.72, 0.81), (0.71, 0.82)]):
    _fake_run(root, f'b{seed}', _config(True, seed), a, macs=1000)
    _fake_run(root, f'n{seed}', _config(False, seed), b, macs=500)
  runs = report.load_runs(root)
  arms = report.arms(runs)
  assert sorted(len(a.runs) for a in arms) == [3, 3]
  assert {a.label for a in arms} == {'mlpconv', 'plain'}
  paths = report.write_report(root)
  with open(paths['md'], encoding='utf-8') as f:
    md = f.read()
  assert '| mlpconv | 3 |' in md and '| plain | 3 |' in md
  assert '+10.00 points' in md and 'plain has higher accuracy' in md
  assert '0.500x' in md  # MACs against the reference arm
  for name in ('pareto', 'curves', 'time'):
    with open(paths[name], 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  assert 'mixed provenance' not in md


def test_report_flags_mixed_commits_and_names_a_corrupt_file(tmp_path):
  root = str(tmp_path)
  _fake_run(root, 'a', _config(True, 0), 0.7)
  _fake_run(root, 'b', _config(True, 1), 0.7)
  summary = os.path.join(root, 'b', workdir.SUMMARY)
  data = workdir.read_json(summary)
  workdir.write_json(summary, {**data, 'git_commit': 'def'})
  report.write_report(root)
  with open(os.path.join(root, 'results.md'), encoding='utf-8') as f:
    assert 'mixed provenance: 2 code commits' in f.read()
  with open(summary, 'w', encoding='utf-8') as f:
    f.write('{"torn')
  with pytest.raises(report.UserError, match=f'{summary} is not valid JSON'):
    report.load_runs(root)


RESULTS = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'results')
PUBLISHED_SWEEPS = sorted(
    name for name in os.listdir(RESULTS)
    if os.path.exists(os.path.join(RESULTS, name, 'results.csv')))


def test_the_ablation_is_published():
  assert 'cifar10_ablation' in PUBLISHED_SWEEPS


@pytest.mark.parametrize('name', PUBLISHED_SWEEPS)
def test_published_report_regenerates_exactly(tmp_path, name):
  """The committed results.csv is what the committed runs say, to the digit."""
  import shutil  # pylint: disable=g-import-not-at-top
  PUBLISHED = os.path.join(RESULTS, name)  # pylint: disable=invalid-name
  # What is published: the manifest and each finished run's record (a run
  # still training here has no summary.json and is not published yet).
  copy = str(tmp_path / 'ablation')
  os.makedirs(copy)
  shutil.copy(os.path.join(PUBLISHED, workdir.MANIFEST), copy)
  for name in os.listdir(PUBLISHED):
    run = os.path.join(PUBLISHED, name)
    if os.path.exists(os.path.join(run, workdir.SUMMARY)):
      os.makedirs(os.path.join(copy, name))
      for f in (workdir.CONFIG, workdir.METRICS, workdir.SUMMARY,
                workdir.RUN_STATUS):
        shutil.copy(os.path.join(run, f), os.path.join(copy, name))
  speed = os.path.join(PUBLISHED, cost.SPEED_FILE)
  if os.path.exists(speed):  # the side-by-side rates the report plots
    shutil.copy(speed, copy)
  with open(os.path.join(PUBLISHED, 'results.md'), encoding='utf-8') as f:
    allow_mixed = '**Drawn with --allow_mixed' in f.read()  # as published
  paths = report.write_report(copy, allow_mixed=allow_mixed)
  for name in ('results.csv', 'results.md'):
    with open(os.path.join(PUBLISHED, name), encoding='utf-8') as f:
      published = f.read()
    with open(os.path.join(copy, name), encoding='utf-8') as f:
      regenerated = f.read()
    assert regenerated.replace(copy, PUBLISHED) == published, name
  assert os.path.exists(paths['pareto'])


def test_the_ablation_recipe_is_what_the_published_runs_ran():
  """``inception_cifar.py:ablation`` resolves to every published run's config."""
  from configs import inception_cifar  # pylint: disable=g-import-not-at-top
  published = os.path.join(RESULTS, 'cifar10_ablation')
  runs = sorted(n for n in os.listdir(published)
                if os.path.isdir(os.path.join(published, n)))
  assert len(runs) == 20
  for name in runs:
    saved = workdir.load_config(os.path.join(published, name)).to_dict()
    config = inception_cifar.get_config('ablation')
    config.dataset = saved['dataset']  # the command line's data location
    config.model.update(saved['model'])  # the sweep's overrides
    config.seed = saved['seed']
    requested = config.to_dict()
    # Fields the code gained after the sweep ran, whose defaults compute what
    # it computed (as on a resume: inception.training.identity.differences).
    gained = set(requested) - set(saved)
    assert gained <= {'activation_dtype'}, name
    assert requested['activation_dtype'] == 'auto' and saved['dtype'] == (
        'float32')  # 'auto' keeps float32 activations in float32
    assert {k: v for k, v in requested.items() if k not in gained} == saved, name


@pytest.mark.parametrize('name,minutes,runs', [
    ('cpu_time_to_accuracy', [5, 10, 15, 20], 4), ('nin_cpu', [15, 30, 45], 1)])
def test_published_time_to_accuracy_table_regenerates(name, minutes, runs):
  """results/<name>/table.md is what its runs' metrics say."""
  from inception.sweeps import time_to_accuracy  # pylint: disable=g-import-not-at-top
  folder = os.path.join(RESULTS, name)
  with open(os.path.join(folder, 'table.md'), encoding='utf-8') as f:
    published = f.read()
  regenerated = time_to_accuracy.runs_table(folder, minutes)
  assert regenerated == published
  assert regenerated.count('\n') >= 2 + runs  # header, rule, and every run


def test_published_nin_cpu_run_reaches_85_percent_in_45_minutes():
  """results/nin_cpu: the recipe's run and the README's quote of it."""
  from inception.sweeps import time_to_accuracy  # pylint: disable=g-import-not-at-top
  folder = os.path.join(RESULTS, 'nin_cpu')
  run = os.path.join(folder, 'bn_bf16_11ep_dropout0_wd5e-4_seed0')
  first = next(p for p in time_to_accuracy.eval_curve(run)
               if p['accuracy'] >= 0.85)
  assert first['wall_s'] <= 45 * 60
  with open(os.path.join(folder, 'README.md'), encoding='utf-8') as f:
    readme = f.read()
  assert f"{first['accuracy']:.4f} after {first['wall_s'] / 60:.1f} min" in readme
  with open(os.path.join(folder, 'table.md'), encoding='utf-8') as f:
    assert f.read().splitlines()[2] in readme


def test_published_bf16_accuracy_is_what_the_runs_say():
  """results/cpu_bf16_accuracy: each curve in its README, and bf16 within 0.5 points."""
  from inception.sweeps import time_to_accuracy  # pylint: disable=g-import-not-at-top
  folder = os.path.join(RESULTS, 'cpu_bf16_accuracy')
  fp32 = os.path.join(RESULTS, 'cpu_time_to_accuracy')
  with open(os.path.join(folder, 'README.md'), encoding='utf-8') as f:
    readme = f.read()
  with open(os.path.join(folder, 'table.md'), encoding='utf-8') as f:
    assert time_to_accuracy.runs_table(folder, [5, 10, 15, 20]) == f.read()
  # (bf16 run, its fp32 references: same recipe and seed)
  pairs = [('bf16_b128_lr0.2_6.5ep_flip_ema0.99_seed0',
            ['b128_lr0.2_6.5ep_flip_ema0.99_seed0',
             'onednn_b128_lr0.2_6.5ep_flip_ema0.99_seed0'])] + [
                 (f'bf16_acts_b128_lr0.2_8ep_flip_ema0.99_seed{s}',
                  [f'onednn_b128_lr0.2_8ep_flip_ema0.99_seed{s}'])
                 for s in (0, 1)] + [
                     ('bf16_acts_b128_lr0.2_8ep_flip_ema0.99_seed0',
                      ['onednn_bn_b128_lr0.2_8ep_flip_ema0.99_seed0'])]

  def final(workdir):
    curve = [p['accuracy'] for p in time_to_accuracy.eval_curve(workdir)]
    quoted = ' / '.join(f'{a:.4f}' for a in curve[:-1]) + f' / **{curve[-1]:.4f}**'
    assert quoted in readme, workdir
    return curve[-1]

  # The width re-tuning on train[80%:90%]: the recipe keeps the better one.
  tuned = {run: final(os.path.join(folder, 'tuning', run))
           for run in ('w0.125_8.5ep_seed0', 'w0.25_4.5ep_seed0')}
  assert max(tuned, key=tuned.get).startswith('w0.125')
  amx = [final(os.path.join(
      folder, f'amx_bf16_acts_b128_lr0.2_8ep_flip_ema0.99_seed{s}'))
         for s in (0, 1)]
  arm = stats.summarize(amx)
  assert f'Mean {arm.mean:.4f} ± {arm.std:.4f} over the two seeds' in ' '.join(
      readme.split())
  for bf16, references in pairs:
    ours = final(os.path.join(folder, bf16))
    for reference in references:
      assert abs(ours - final(os.path.join(fp32, reference))) < 0.005
  # The two-seed comparison, as the README words it.
  arms = {name: [final(os.path.join(where, f'{run}_seed{s}')) for s in (0, 1)]
          for name, where, run in (
              ('bf16', folder, 'bf16_acts_b128_lr0.2_8ep_flip_ema0.99'),
              ('fp32', fp32, 'onednn_b128_lr0.2_8ep_flip_ema0.99'))}
  text = ' '.join(readme.split())
  for name, values in arms.items():
    arm = stats.summarize(values)
    assert (f'{name} {arm.mean:.4f} ± {arm.std:.4f} (95% CI '
            f'[{arm.ci_low:.4f}, {arm.ci_high:.4f}])') in text
  sentence = stats.compare('bf16', arms['bf16'], 'fp32', arms['fp32']).sentence()
  assert sentence[:-1].split(' (', 1)[1] in text


def test_report_groups_only_by_fields_that_change_the_result(tmp_path):
  """Without sweep.json, cadence fields (identity.MUTABLE) split no arm."""
  from inception.training import identity  # pylint: disable=g-import-not-at-top
  root = str(tmp_path)
  cadence = {'checkpoint_every_steps': 100, 'log_every_steps': 10,
             'eval_every_epochs': 1.0, 'keep_checkpoints': 3}
  assert set(cadence) <= set(identity.MUTABLE)
  for seed in range(3):
    for bottleneck in (True, False):
      varied = {k: v * (seed + 1) for k, v in cadence.items()}
      _fake_run(root, f'{bottleneck}{seed}',
                {**_config(bottleneck, seed), **varied}, 0.7 + seed / 100)
  arms = report.arms(report.load_runs(root))
  assert sorted((a.label, len(a.runs)) for a in arms) == [('mlpconv', 3),
                                                          ('plain', 3)]
  paths = report.write_report(root)
  with open(paths['csv'], encoding='utf-8') as f:
    header = f.readline()
  assert 'model.bottleneck' in header and 'log_every_steps' not in header


@pytest.mark.parametrize('content', ['[1, 2]', 'null', '{"status": "done"}',
                                     '{}', '"done"', '{"step": "10"}',
                                     '{"step": 10, "macs": "many"}'])
def test_a_summary_of_the_wrong_shape_is_one_warning(tmp_path, content):
  root = str(tmp_path)
  _fake_run(root, 'a', _config(True, 0), 0.7)
  _fake_run(root, 'b', _config(True, 1), 0.72)
  bad = os.path.join(root, 'b', workdir.SUMMARY)
  with open(bad, 'w', encoding='utf-8') as f:
    f.write(content)
  warnings = []
  paths = report.write_report(root, warn=warnings.append)
  assert len(warnings) == 1 and os.path.join(root, 'b') in warnings[0]
  assert 'unreadable' in warnings[0] and '\n' not in warnings[0]
  runs = {r.name: r.status for r in report.load_runs(root, warn=print)}
  assert runs == {'a': 'done', 'b': 'unreadable'}
  with open(paths['md'], encoding='utf-8') as f:
    md = f.read()
  assert '| mlpconv | 1 |' in md and '## Unreadable runs' in md
  # Nothing readable: one error line.
  _fake_run(root, 'c', _config(True, 2), 0.7)
  for name in ('a', 'c'):
    with open(os.path.join(root, name, workdir.SUMMARY), 'w',
              encoding='utf-8') as f:
      f.write(content)
  with pytest.raises(report.UserError, match='no run of .* is readable'):
    report.load_runs(root, warn=warnings.append)


def _report_cli(folder):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  out = subprocess.run([sys.executable, '-m', 'inception.cli.report', folder],
                       cwd=os.path.dirname(RESULTS), capture_output=True,
                       text=True, timeout=300)
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  return out.returncode, out.stdout, lines


def test_report_cli_on_empty_broken_and_read_only_folders(tmp_path):
  """One ``error:`` line and exit 2; the tables still printed if they can be."""
  import stat  # pylint: disable=g-import-not-at-top
  empty = tmp_path / 'empty'
  empty.mkdir()
  code, _, lines = _report_cli(str(empty))
  assert code == 2 and len(lines) == 1, lines
  assert lines[0].startswith('error: ') and 'holds no runs' in lines[0]
  assert os.listdir(empty) == []
  broken = str(tmp_path / 'broken')
  _fake_run(broken, 'a', _config(True, 0), 0.7)
  _fake_run(broken, 'b', _config(True, 1), 0.7)
  with open(os.path.join(broken, 'b', workdir.SUMMARY), 'w') as f:
    f.write('null')
  code, stdout, lines = _report_cli(broken)
  assert code == 0 and len(lines) == 1 and lines[0].startswith('warning: ')
  assert '| b |' in stdout
  # A folder the report cannot write into (even as root: the files' names
  # are taken by directories).
  read_only = str(tmp_path / 'read_only')
  _fake_run(read_only, 'a', _config(True, 0), 0.7)
  for name in ('results.csv', 'results.md'):
    os.makedirs(os.path.join(read_only, name))
  os.chmod(read_only, stat.S_IRUSR | stat.S_IXUSR)
  try:
    code, stdout, lines = _report_cli(read_only)
  finally:
    os.chmod(read_only, stat.S_IRWXU)
  assert code == 2 and len(lines) == 1, lines
  assert lines[0].startswith('error: cannot write the report into')
  assert '| a | mlpconv | done |' in stdout


def test_error_text_cannot_break_the_markdown(tmp_path):
  """A failed run's error (log lines, a progress bar, ``|``) is one item."""
  root = str(tmp_path)
  _fake_run(root, 'a', _config(True, 0), 0.7)
  d = os.path.join(root, 'b')
  os.makedirs(d)
  workdir.write_json(os.path.join(d, workdir.CONFIG), _config(True, 1))
  workdir.write_json(os.path.join(d, workdir.RUN_STATUS), {
      'status': 'failed', 'error': 'step 3 | loss 2.1\r 40%|####  |\nboom'})
  paths = report.write_report(root)
  with open(paths['md'], encoding='utf-8') as f:
    md = f.read()
  item = [l for l in md.splitlines() if l.startswith('- b: ')]
  assert item == ['- b: step 3 / loss 2.1  40%/####  / boom']
  for table in md.split('\n\n'):
    rows = [l for l in table.splitlines() if l.startswith('|')]
    assert len({r.count('|') for r in rows}) <= 1, table
