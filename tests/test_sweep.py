"""Sweeps: axes, resumable runner, failures, kill/restart, report, notebook."""
import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import nbclient
import nbformat
import pytest

from conftest import (CONFIG, REPO, TINY_MACS, cli_overrides, quick_config,
                      record_steps)
from inception import report, sweep
from inception.errors import UserError

SWEEP = [sys.executable, 'sweep.py', '--config', CONFIG]


def _write(path, text):
  with open(path, 'w', encoding='utf-8') as f:
    f.write(text)
  return str(path)


def test_product_zip_chain():
  a = sweep.axis('model.bottleneck', [True, False])
  s = sweep.axis('seed', [0, 1])
  assert sweep.product(a, s) == [
      {'model.bottleneck': True, 'seed': 0}, {'model.bottleneck': True, 'seed': 1},
      {'model.bottleneck': False, 'seed': 0}, {'model.bottleneck': False, 'seed': 1}]
  assert sweep.zip(a, s) == [{'model.bottleneck': True, 'seed': 0},
                             {'model.bottleneck': False, 'seed': 1}]
  assert sweep.chain(a, s) == a + s
  with pytest.raises(ValueError):
    sweep.zip(a, sweep.axis('seed', [0]))


def test_shipped_sweeps_load_and_name_their_runs(tmp_path):
  from configs import quickstart  # pylint: disable=g-import-not-at-top
  config = quickstart.get_config()  # GoogLeNet: three ablation variants
  runs = sweep.plan(str(tmp_path), sweep.load_sweep(
      'configs/sweeps/bottleneck_ablation.py', config))
  assert len(runs) == 9 and len({r.name for r in runs}) == 9
  assert runs[-1].name == 'bottleneck=False,pool_proj=False,seed=2'
  equal = sweep.load_sweep('configs/sweeps/equal_macs.py', config)
  assert len(equal) == 6


def test_equal_macs_width_is_within_5_percent():
  from configs.sweeps import equal_macs  # pylint: disable=g-import-not-at-top
  from configs import inception_cifar  # pylint: disable=g-import-not-at-top
  width, naive, target = equal_macs.equal_macs_width(
      inception_cifar.get_config('cpu'))
  assert width < 0.125 and abs(naive - target) <= 0.05 * target


def test_dry_run_prints_plain_commands_and_keeps_metacharacters(tmp_path):
  value = "/tmp/x; touch pwned $(id) 'q' \"dq\" `uname`"
  path = _write(tmp_path / 'meta.py',
                f'def get_sweep(config):\n  return [{{"data_dir": {value!r}}}]\n')
  out = subprocess.run(SWEEP + ['--sweep', path, '--workdir',
                                str(tmp_path / 'w'), '--dry_run'],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  lines = [l for l in out.stdout.splitlines() if 'inception.train_main' in l]
  assert len(lines) == 1
  argv = shlex.split(lines[0])
  assert argv[1:3] == ['-m', 'inception.train_main']
  assert f'--config.data_dir={value}' in argv
  assert os.path.isabs(argv[argv.index('--config') + 1])
  assert not os.path.exists(tmp_path / 'w')


FAILING = {'learning_rate': 1e30, 'warmup_epochs': 0.0}


@pytest.fixture(scope='module')
def seed_sweep(tmp_path_factory):
  """Two seeds and a diverging run; the runner is killed with -9 once.

  The overrides carry shell metacharacters, which must reach the config
  as written.
  """
  tmp = tmp_path_factory.mktemp('sweep')
  value = "/tmp/$(touch pwned); echo 'hi'"
  path = _write(tmp / 'seeds.py', (
      'from inception import sweep\n'
      'def get_sweep(config):\n'
      f'  return sweep.product(sweep.axis("seed", [0, 1]),'
      f' [{{"data_dir": {value!r}}}]) + [{FAILING!r}]\n'))
  workdir = str(tmp / 'w')
  cmd = SWEEP + ['--sweep', path, '--workdir', workdir, *cli_overrides()]
  runner = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
  second = os.path.join(workdir, sweep.run_name({'seed': 1, 'data_dir': value}))
  deadline = time.time() + 300
  while time.time() < deadline and not record_steps(second, 'train/loss'):
    time.sleep(0.05)
  runner.send_signal(signal.SIGKILL)  # its training child gets SIGTERM
  runner.wait()
  time.sleep(1)
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                       timeout=600)
  return workdir, out, value


def test_killed_sweep_completes_every_run_exactly_once(seed_sweep):
  workdir, out, _ = seed_sweep
  assert out.returncode == 1, out.stderr[-3000:]  # one run failed
  runs = report.load_runs(workdir)
  assert [r.status for r in runs] == ['done', 'done', 'failed']
  for r in runs[:2]:
    assert record_steps(r.workdir, 'train/loss') == list(range(1, 9))
    assert record_steps(r.workdir, 'eval/accuracy') == [8]
  assert 'run(s) already done, skipped' in out.stdout


def test_failed_run_is_recorded_and_others_finish(seed_sweep):
  workdir, out, _ = seed_sweep
  failed = {r.name: r for r in report.load_runs(workdir)}[
      sweep.run_name(FAILING)]
  assert failed.status == 'failed' and 'became nan' in failed.error
  assert '1 run(s) failed' in out.stdout
  with open(os.path.join(workdir, 'results.md'), encoding='utf-8') as f:
    assert '## Failed runs' in f.read()


def test_override_with_shell_metacharacters_reaches_the_config(seed_sweep):
  workdir, _, value = seed_sweep
  for r in report.load_runs(workdir)[:2]:
    assert r.config['data_dir'] == value
  assert not os.path.exists(os.path.join(REPO, 'pwned'))


def test_report_files(seed_sweep):
  workdir, out, _ = seed_sweep
  with open(os.path.join(workdir, 'results.csv'), encoding='utf-8') as f:
    rows = list(csv.DictReader(f))
  assert [r['status'] for r in rows] == ['done', 'done', 'failed']
  assert [r['seed'] for r in rows[:2]] == ['0', '1']
  assert all(int(r['macs']) == TINY_MACS and float(r['final_accuracy']) >= 0
             for r in rows[:2])
  with open(os.path.join(workdir, 'results.md'), encoding='utf-8') as f:
    md = f.read()
  assert '## Mean ± std over seeds' in md and '| 2 |' in md
  for name in ('pareto.png', 'curves.png', 'time.png'):
    with open(os.path.join(workdir, name), 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  assert 'pareto.png' in out.stdout and 'results.md' in out.stdout
  again = subprocess.run([sys.executable, '-m', 'inception.report', workdir],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
  assert again.returncode == 0 and '| run |' in again.stdout


def test_sweep_rejects_bad_override_type(tmp_path):
  path = _write(tmp_path / 'bad.py',
                'def get_sweep(config):\n  return [{"batch_size": "big"}]\n')
  with pytest.raises(UserError, match='batch_size=.big. is a str but the '
                     'field is a int'):
    sweep.load_sweep(path, quick_config())


def _execute_notebook(cwd: str, sweep_dir: str | None):
  nb = nbformat.read(os.path.join(REPO, 'notebooks', 'analysis.ipynb'), 4)
  if sweep_dir:
    os.environ['ANALYSIS_SWEEP_DIR'] = sweep_dir
  try:
    nbclient.NotebookClient(nb, timeout=600, kernel_name='python3',
                            resources={'metadata': {'path': cwd}}).execute()
  finally:
    os.environ.pop('ANALYSIS_SWEEP_DIR', None)
  outputs = [o for c in nb.cells if c.cell_type == 'code'
             for o in c.get('outputs', [])]
  assert not [o for o in outputs if o.get('output_type') == 'error']
  images = [o for o in outputs if 'image/png' in o.get('data', {})]
  return images, json.dumps(outputs)


def test_notebook_runs_on_a_sweep(seed_sweep):
  """notebooks/analysis.ipynb executes headless and draws its figures."""
  images, text = _execute_notebook(REPO, seed_sweep[0])
  # pareto+curves, MACs, inputs, variance kept + spectra, maps, weights
  assert len(images) >= 6
  assert 'reduces' in text and 'accuracy' in text and 'PCA at rank' in text


def test_notebook_runs_on_the_published_ablation_from_its_folder():
  """Jupyter started in notebooks/ finds results/cifar10_ablation (no checkpoints)."""
  images, text = _execute_notebook(os.path.join(REPO, 'notebooks'), None)
  assert len(images) >= 2  # pareto + curves from metrics alone
  assert 'cifar10_ablation' in text and 'needs a run with checkpoints' in text


def test_ablation_sweep_describes_every_arm_before_training():
  """The dry run shows each arm's branch widths and MACs against the first."""
  from configs import inception_cifar  # pylint: disable=g-import-not-at-top
  config = inception_cifar.get_config('cpu')
  runs = sweep.plan('/nonexistent', sweep.load_sweep(
      'configs/sweeps/cifar10_ablation.py', config))
  assert len(runs) == 20  # 5 seeds x 4 arms
  lines = sweep.describe_arms(config, runs)
  assert len(lines) == 4
  assert '1.000x the target' in lines[0] and '3a branches 8/12/16/2/4/4' in lines[0]
  equal = lines[1]
  ratio = float(equal.split('x the target')[0].rsplit('(', 1)[1])
  assert abs(ratio - 1) <= 0.05 and 'DEGENERATE' in equal
  assert 'separable=True' in lines[2]
  # The costly same-widths reference trains after every comparison run.
  assert [r.overrides['model.width'] for r in runs[-5:]] == [0.125] * 5
  assert not any(r.overrides['model.bottleneck'] for r in runs[-5:])
