"""Work is never lost and a run is never mislabelled.

Paths are resolved once; a resume whose identity cannot be checked is
refused; init_from works with and without an EMA; logged train metrics do
not depend on checkpoint cadence; a failed final evaluation keeps the
training; eval.json says what it changed and survives a read-only workdir;
an absent class is absent, not 0; a full disk is one line.
"""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from PIL import Image

import entry_points
from conftest import (CONFIG, REPO, cli_overrides, final_state, quick_config,
                      records)
from inception.training import (checkpoint, evaluate, identity, loop, metrics,
                                workdir as workdir_lib)
from inception.errors import UserError


def test_a_tilde_workdir_is_expanded_before_the_identity_check(tmp_path,
                                                               monkeypatch):
  monkeypatch.setenv('HOME', str(tmp_path))
  loop.train_and_evaluate(quick_config(), '~/tw', stop_after_steps=4)
  assert os.path.exists(tmp_path / 'tw' / 'config.json')
  assert not os.path.exists('~')
  with pytest.raises(UserError, match='seed: saved 0, requested 3'):
    loop.train_and_evaluate(quick_config(seed=3), '~/tw')
  assert json.load(open(tmp_path / 'tw' / 'config.json'))['seed'] == 0


@pytest.fixture(scope='module')
def stopped_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('stopped'))
  loop.train_and_evaluate(quick_config(), workdir, stop_after_steps=4)
  return workdir


def test_a_resume_without_config_json_is_refused(stopped_run, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / 'run')
  shutil.copytree(stopped_run, workdir)
  os.remove(os.path.join(workdir, 'config.json'))
  with pytest.raises(UserError, match='holds a trained run but no config.json'):
    loop.train_and_evaluate(quick_config(seed=5), workdir)
  assert not os.path.exists(os.path.join(workdir, 'config.json'))


@pytest.mark.parametrize('key', ['seed', 'learning_rate', 'model.width'])
def test_a_resume_with_a_deleted_key_is_refused(stopped_run, tmp_path, key):
  import shutil  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / 'run')
  shutil.copytree(stopped_run, workdir)
  path = os.path.join(workdir, 'config.json')
  saved = json.load(open(path))
  node = saved
  *parents, leaf = key.split('.')
  for p in parents:
    node = node[p]
  del node[leaf]
  json.dump(saved, open(path, 'w'))
  config = quick_config()
  node = config
  for p in parents:
    node = node[p]
  node[leaf] = {'seed': 3, 'learning_rate': 0.3, 'width': 2.0}[leaf]
  with pytest.raises(UserError, match=f'lacks {key}'):
    loop.train_and_evaluate(config, workdir)
  assert json.load(open(path)) == saved  # nothing rewritten


@pytest.mark.parametrize('content', ['[]', 'null', '3', '"x"'])
def test_config_json_of_the_wrong_shape_is_one_error(stopped_run, tmp_path,
                                                     content):
  import shutil  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / 'run')
  shutil.copytree(stopped_run, workdir)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(content)
  with pytest.raises(UserError, match='is not a config'):
    loop.train_and_evaluate(quick_config(), workdir)
  with pytest.raises(UserError, match='is not a config'):
    workdir_lib.load_config(workdir)


@pytest.mark.parametrize('source_ema,target_ema', [
    (0.0, 0.0), (0.0, 0.9), (0.9, 0.0), (0.9, 0.9)])
def test_init_from_works_with_and_without_an_ema(tmp_path, source_ema,
                                                 target_ema):
  """It crashed on the first step: the EMA shared the params' buffers, and
  the train step donates both."""
  source = str(tmp_path / 'source')
  loop.train_and_evaluate(quick_config(ema_decay=source_ema), source,
                           stop_after_steps=4)
  target = str(tmp_path / 'target')
  summary = loop.train_and_evaluate(
      quick_config(ema_decay=target_ema, init_from=source), target)
  assert summary['status'] == 'done'
  assert np.isfinite(summary['final_eval_accuracy'])


def test_a_refused_init_from_writes_nothing(tmp_path):
  target = str(tmp_path / 'target')
  with pytest.raises(Exception):
    loop.train_and_evaluate(
        quick_config(init_from=str(tmp_path / 'no_such_run')), target)
  assert not os.path.exists(target) or not os.listdir(target)


def test_logged_train_metrics_do_not_depend_on_checkpoint_cadence(tmp_path):
  """The mean logged at a step is over its log window, whatever was saved
  or evaluated inside the window."""
  logs = {}
  for every in (8, 3):
    workdir = str(tmp_path / f'ckpt{every}')
    loop.train_and_evaluate(quick_config(
        log_every_steps=4, checkpoint_every_steps=every,
        eval_every_epochs=0.0), workdir)
    logs[every] = records(workdir, 'train/loss')
  assert logs[8].keys() == logs[3].keys() == {4, 8}
  for step in logs[8]:
    assert logs[8][step] == pytest.approx(logs[3][step], rel=1e-6)


def test_a_failed_final_evaluation_keeps_the_final_checkpoint(tmp_path,
                                                             monkeypatch):
  workdir = str(tmp_path / 'run')
  calls = []

  def failing(*args, **kwargs):
    calls.append(1)
    raise RuntimeError('evaluation failed')
  monkeypatch.setattr(loop.evaluate, 'run', failing)
  with pytest.raises(RuntimeError, match='evaluation failed'):
    loop.train_and_evaluate(quick_config(eval_every_epochs=0.0), workdir)
  assert calls and checkpoint.Checkpointer(
      workdir, read_only=True).steps()[-1] == 8


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('finished'))
  loop.train_and_evaluate(quick_config(), workdir)
  return workdir


def test_eval_json_records_the_overrides_it_ran_with(finished_run):
  config = workdir_lib.load_config(finished_run)
  config.eval_flip = True
  result = evaluate.evaluate_checkpoint(config, finished_run)
  assert result['overrides'] == {'eval_flip': {'saved': False, 'used': True}}
  saved = json.load(open(os.path.join(finished_run, 'eval.json')))
  assert saved['overrides'] == result['overrides']
  plain = evaluate.evaluate_checkpoint(workdir_lib.load_config(finished_run),
                                       finished_run)
  assert plain['overrides'] == {}


def _mount_tmpfs(path, size):
  os.makedirs(path, exist_ok=True)
  result = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}',
                           'tmpfs', path], capture_output=True)
  if result.returncode != 0:
    pytest.skip('cannot mount a small tmpfs here (needs root)')


def _unmount(path):
  subprocess.run(['umount', '-l', path], capture_output=True)


def test_eval_on_a_read_only_mount_prints_its_result(finished_run, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  mount = str(tmp_path / 'mnt')
  _mount_tmpfs(mount, '16m')
  try:
    workdir = os.path.join(mount, 'run')
    shutil.copytree(finished_run, workdir)
    if os.path.exists(os.path.join(workdir, 'eval.json')):
      os.remove(os.path.join(workdir, 'eval.json'))
    subprocess.run(['mount', '-o', 'remount,ro', mount], check=True)
    proc = subprocess.run(
        [sys.executable, 'eval.py', '--workdir', workdir], cwd=REPO,
        text=True, capture_output=True, timeout=300)
  finally:
    _unmount(mount)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'accuracy' in proc.stdout and 'Traceback' not in proc.stderr
  assert 'could not save' in proc.stderr


def test_a_real_full_disk_is_one_line_and_keeps_the_previous_checkpoint(
    tmp_path):
  """A 2 MB file system: the save at step 20 cannot fit beside step 10's.

  The tiny NiN at 6x its width (137,084 params, a 1.2 MB checkpoint with its
  momentum) compiles in a fraction of the quickstart GoogLeNet's time.
  """
  mount = str(tmp_path / 'tiny')
  _mount_tmpfs(mount, '2m')
  try:
    workdir = os.path.join(mount, 'run')
    proc = subprocess.run(
        [sys.executable, 'train.py', '--config', CONFIG, '--workdir', workdir,
         '--config.num_train_steps=30', '--config.checkpoint_every_steps=10',
         '--config.model.width=6'], cwd=REPO, text=True,
        capture_output=True, timeout=300)
    steps = checkpoint.Checkpointer(workdir, read_only=True).steps()
    leftovers = [n for n in os.listdir(os.path.join(workdir, 'checkpoints'))
                 if 'tmp' in n]
  finally:
    _unmount(mount)
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  assert len(lines) == 1 and lines[0].startswith('error: saving the '
                                                 'checkpoint at step 20')
  assert 'no space left' in lines[0] and 'are kept' in lines[0]
  assert steps == [10] and not leftovers


def test_an_absent_class_is_reported_absent_not_zero(tmp_path):
  root = tmp_path / 'images'
  rng = np.random.default_rng(0)
  for split, classes in (('train', 'abc'), ('val', 'ab')):
    for c in classes:
      os.makedirs(root / split / c)
      for i in range(4):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), np.uint8)).save(
            root / split / c / f'{i}.png')
  workdir = str(tmp_path / 'run')
  config = quick_config(dataset=f'folder:{root}', train_split='train',
                        eval_split='val', channels=3, batch_size=4,
                        num_train_steps=2)
  config.model.num_classes = 3
  loop.train_and_evaluate(config, workdir)
  result = evaluate.evaluate_checkpoint(workdir_lib.load_config(workdir),
                                        workdir)
  assert result['class_names'] == ['a', 'b', 'c']
  assert result['per_class_accuracy'][2] is None
  assert all(isinstance(a, float) for a in result['per_class_accuracy'][:2])
  assert 'absent' in evaluate.format_result(result)


def test_a_symlink_loop_in_an_image_folder_is_skipped(tmp_path):
  root = tmp_path / 'images'
  rng = np.random.default_rng(1)
  for c in 'ab':
    os.makedirs(root / 'train' / c)
    for i in range(6):
      Image.fromarray(rng.integers(0, 255, (8, 8, 3), np.uint8)).save(
          root / 'train' / c / f'{i}.png')
  os.symlink('loop.png', root / 'train' / 'a' / 'loop.png')
  os.symlink('c', root / 'train' / 'c')  # a class folder that loops too
  config = quick_config(dataset=f'folder:{root}', train_split='train[:50%]',
                        eval_split='train[50%:]', channels=3, batch_size=4,
                        num_train_steps=2)
  config.model.num_classes = 2
  summary = loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert summary['status'] == 'done'


def _interrupt(argv, after, env=None):
  proc = subprocess.Popen(argv, cwd=REPO, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE,
                          env={**os.environ, **(env or {})})
  if isinstance(after, str):  # a line the command prints when it is there
    while after not in proc.stdout.readline():
      assert proc.poll() is None, proc.stderr.read()[-2000:]
  else:
    time.sleep(after)
  proc.send_signal(signal.SIGINT)
  stdout, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 130, (proc.returncode, stderr[-2000:])
  assert 'Traceback' not in stderr, stderr[-3000:]
  lines = [l for l in stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith('error: interrupted'), lines
  return stdout


def test_ctrl_c_while_an_entry_point_imports_is_one_line(finished_run):
  _interrupt([sys.executable, 'eval.py', '--workdir', finished_run], 1.0)


_BUSY_COMMAND = """
import time
from inception.cli import app
def main(argv):
  print('ready', flush=True)
  time.sleep(60)
app.run(main)
"""


def test_ctrl_c_while_a_command_runs_is_one_line():
  """app.run's commands (eval.py among them): no traceback from any thread."""
  _interrupt([sys.executable, '-c', _BUSY_COMMAND], 'ready')


_DEAD = dict(num_train_steps=80, log_every_steps=5, learning_rate=40.0,
             eval_every_epochs=0.0, stuck_windows=3)


def test_a_stuck_run_says_so_and_trains_on(tmp_path):
  """lr 40 kills the tiny network: chance loss, zero gradient."""
  workdir = str(tmp_path / 'dead')
  summary = loop.train_and_evaluate(quick_config(**_DEAD), workdir)
  assert summary['status'] == 'done'
  warnings = [r for r in metrics.read_jsonl(
      os.path.join(workdir, 'metrics.jsonl')) if r.get('warning') == 'stuck']
  assert len(warnings) == 1
  assert 'chance level (log 10' in warnings[0]['message']
  assert 'learning rate' in warnings[0]['message']


def test_a_stuck_run_stops_when_asked_and_keeps_its_checkpoint(tmp_path):
  from inception.errors import TrainingError  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / 'dead')
  with pytest.raises(TrainingError, match='looks stuck.*stop_when_stuck'):
    loop.train_and_evaluate(quick_config(**_DEAD, stop_when_stuck=True),
                             workdir)
  assert checkpoint.Checkpointer(workdir, read_only=True).steps()


def test_the_stuck_watch_on_the_paper_nin_with_and_without_its_class_relu():
  """The two published NiN pilots (results/nin_paper_pilot): the one whose
  class-map ReLUs died is called stuck, the one without them never is; and
  the README's table is what their metrics say."""
  folder = os.path.join(REPO, 'results', 'nin_paper_pilot')
  windows = {}
  for relu in (True, False):
    rows = metrics.read_jsonl(os.path.join(
        folder, f'classifier_relu_{relu}', 'metrics.jsonl'))
    windows[relu] = [(r['step'], r['train/loss'], r['train/grad_norm'])
                     for r in rows if 'train/loss' in r]
  watch = metrics.StuckWatch(10, windows=5)
  assert [watch.observe(l, g) for _, l, g in windows[True]] == (
      [False] * 5 + [True])
  watch = metrics.StuckWatch(10, windows=1)
  assert not any(watch.observe(l, g) for _, l, g in windows[False])
  with open(os.path.join(folder, 'README.md'), encoding='utf-8') as f:
    readme = f.read()
  for (step, l1, g1), (_, l2, g2) in zip(windows[True], windows[False]):
    if step in (50, 100, 200, 300):
      fmt = lambda g: f'{g:.2f}' if g >= 1 else f'{g:.2g}'
      assert (f'| {step} | {l1:.4f} | {fmt(g1)} | {l2:.4f} | {fmt(g2)} |'
              in readme), step


def test_a_healthy_run_is_not_called_stuck(tmp_path):
  workdir = str(tmp_path / 'ok')
  loop.train_and_evaluate(quick_config(log_every_steps=1, stuck_windows=1),
                           workdir)
  assert not records(workdir, 'warning')


def test_a_resumed_run_logs_what_an_uninterrupted_run_logs(tmp_path):
  """The log window straddling a stop is saved with the checkpoint."""
  config = dict(log_every_steps=4, checkpoint_every_steps=100,
                eval_every_epochs=0.0)
  straight = str(tmp_path / 'straight')
  loop.train_and_evaluate(quick_config(**config), straight)
  resumed = str(tmp_path / 'resumed')
  loop.train_and_evaluate(quick_config(**config), resumed, stop_after_steps=3)
  loop.train_and_evaluate(quick_config(**config), resumed)
  for key in ('train/loss', 'train/grad_norm'):
    assert records(resumed, key) == records(straight, key)


HELP_FLAGS = {
    'train.py': ('--workdir', '--stop_after_steps', '--num_processes',
                 '--profile_steps'),
    'export.py': ('--workdir', '--step', '--output', '--batch_size'),
    'sweep.py': ('--sweep', '--parallel', '--launcher'),
    'flops.py': ('--compare', '--per_layer'),
    'eval.py': ('--workdir', '--step', '--split'),
    'report.py': ('--reference', '--allow_mixed')}


@pytest.fixture(scope='module')
def helps():
  """script -> (exit status, stdout, stderr) of ``python <script> --help``,
  the six started together (``entry_points``)."""
  return entry_points.run_together(
      {script: ([script, '--help'], dict(os.environ))
       for script in HELP_FLAGS})


@pytest.mark.parametrize('script', HELP_FLAGS)
def test_help_lists_the_commands_own_flags(helps, script):
  _, stdout, stderr = helps[script]  # absl's --help exits 1
  listed = [l.split(':')[0].strip().replace('--[no]', '--')
            for l in stdout.splitlines() if l.startswith('  --')]
  assert all(f in listed for f in HELP_FLAGS[script]), (stdout + stderr)[-2000:]


def test_the_flops_library_run_as_a_module_names_the_command():
  proc = subprocess.run([sys.executable, '-m', 'inception.models.flops'],
                        cwd=REPO,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      'error: the FLOP accounting command is `python flops.py` (or '
      '`python -m inception.cli.flops`); inception.models.flops is its library']
