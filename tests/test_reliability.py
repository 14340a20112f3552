"""Readers never disturb training, Ctrl-C saves, a resume keeps the run's identity,
metrics are never silently dropped, and the remaining bad values get one line."""
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import (CONFIG, REPO, assert_same_state, cli_overrides,
                      final_state, quick_config, record_steps, records)
from inception.sweeps import sweep
from inception.training import (checkpoint, evaluate, metrics, loop,
                                workdir as workdir_lib)
from inception.errors import TrainingError, UserError
from test_faults import _saving, _wait

TRAIN = [sys.executable, 'train.py', '--config', CONFIG]
LONG = {'num_train_steps': 40, 'checkpoint_every_steps': 1,
        'keep_checkpoints': 2, 'schedule': 'constant'}


@pytest.fixture(scope='module')
def long_run(tmp_path_factory):
  """40 steps saved at every step, undisturbed: the reference."""
  workdir = str(tmp_path_factory.mktemp('long'))
  loop.train_and_evaluate(quick_config(**LONG), workdir)
  return workdir


def test_concurrent_eval_never_disturbs_training(long_run, tmp_path):
  """Evaluate again and again while a run saves at every step."""
  workdir = str(tmp_path / 'run')
  proc = subprocess.Popen(TRAIN + ['--workdir', workdir,
                                   *cli_overrides(**LONG)], cwd=REPO,
                          text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
  config = quick_config(**LONG)
  assert _wait(lambda: bool(checkpoint.Checkpointer(
      workdir, read_only=True).steps()) or proc.poll() is not None)
  evaluated = []
  while proc.poll() is None:
    result = evaluate.evaluate_checkpoint(config, workdir)
    evaluated.append(result['step'])
  out, _ = proc.communicate()
  assert proc.returncode == 0, out[-3000:]
  assert len(evaluated) >= 2, evaluated
  assert_same_state(final_state(workdir), final_state(long_run))
  assert records(workdir, 'train/loss') == records(long_run, 'train/loss')


@pytest.mark.parametrize('deleted_between', ['listing_and_stat',
                                             'exists_and_is_dir'])
def test_reader_survives_a_checkpoint_deleted_while_listing(
    long_run, tmp_path, monkeypatch, deleted_between):
  """The races CI hit: a step is listed, then the trainer deletes it.

  Deleted before orbax stats the step, or between its ``exists()`` and
  ``is_dir()`` on it (orbax then raises NotADirectoryError).
  """
  workdir = str(tmp_path)
  shutil.copytree(long_run, workdir, dirs_exist_ok=True)
  ckpt_dir = os.path.join(workdir, workdir_lib.CHECKPOINTS)
  oldest = str(min(int(n) for n in os.listdir(ckpt_dir) if n.isdigit()))
  # pylint: disable=import-outside-toplevel
  from orbax.checkpoint._src.metadata import checkpoint as metadata_lib
  from orbax.checkpoint._src.path import step as step_lib
  # pylint: enable=import-outside-toplevel
  if deleted_between == 'listing_and_stat':
    listed_at = step_lib.Metadata.commit_timestamp

    def deleted_once_listed(meta):
      if meta.step == int(oldest):
        shutil.rmtree(os.path.join(ckpt_dir, oldest), ignore_errors=True)
      return listed_at.fget(meta)

    monkeypatch.setattr(step_lib.Metadata, 'commit_timestamp',
                        property(deleted_once_listed))
  else:
    sanitize = metadata_lib._sanitize_metadata_path  # pylint: disable=protected-access

    def deleted_after_exists(path):
      path = sanitize(path)
      if path.name == oldest and path.exists():
        shutil.rmtree(path, ignore_errors=True)  # then is_dir() is False
        raise NotADirectoryError(f'Path is not a directory: {path}')
      return path

    monkeypatch.setattr(metadata_lib, '_sanitize_metadata_path',
                        deleted_after_exists)
  reader = checkpoint.Checkpointer(workdir, read_only=True)
  assert reader.steps() == [40]
  reader.close()


def test_leftover_temporary_checkpoint_is_one_clear_error(tmp_path):
  workdir = str(tmp_path)
  os.makedirs(os.path.join(workdir, 'checkpoints',
                           '5.orbax-checkpoint-tmp-1234', 'state'))
  with pytest.raises(UserError, match='has no complete checkpoint yet'):
    checkpoint.read(workdir, None)
  assert os.path.isdir(os.path.join(workdir, 'checkpoints',
                                    '5.orbax-checkpoint-tmp-1234'))
  out = subprocess.run([sys.executable, 'eval.py', '--config', CONFIG,
                        '--workdir', workdir], cwd=REPO, text=True,
                       capture_output=True, timeout=300)
  assert out.returncode == 2 and 'Traceback' not in out.stderr
  assert 'no complete checkpoint' in out.stderr


def _sigint_run(workdir, when):
  cmd = TRAIN + ['--workdir', workdir, *cli_overrides(
      num_train_steps=100_000, schedule='constant',
      checkpoint_every_steps=1 if when == 'save' else 10_000)]
  proc = subprocess.Popen(cmd, cwd=REPO, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
  if when == 'save':
    assert _wait(lambda: _saving(workdir) or proc.poll() is not None,
                 interval=0.001)
  else:
    assert _wait(lambda: len(record_steps(workdir, 'train/loss')) >= 3)
  proc.send_signal(signal.SIGINT)
  out, _ = proc.communicate(timeout=120)
  return proc.returncode, out


@pytest.mark.parametrize('when', ['loop', 'save'])
def test_first_ctrl_c_saves_and_exits_zero(tmp_path, when):
  workdir = str(tmp_path)
  code, out = _sigint_run(workdir, when)
  assert code == 0, out[-3000:]
  assert 'Traceback' not in out and 'KeyboardInterrupt' not in out
  steps = checkpoint.Checkpointer(workdir, read_only=True).steps()
  assert steps and f'stopped: saved a checkpoint at step {steps[-1]}' in out
  assert 'run the same command to continue' in out
  assert not _saving(workdir)
  # The next run resumes from it.
  summary = loop.train_and_evaluate(
      quick_config(num_train_steps=100_000, schedule='constant',
                   checkpoint_every_steps=1 if when == 'save' else 10_000),
      workdir, stop_after_steps=1)
  assert summary['status'] == 'stopped' and summary['step'] == steps[-1] + 1


def test_signal_during_setup_stops_cleanly(tmp_path):
  """SIGTERM before the first step: exit 0, nothing half-written."""
  workdir = str(tmp_path)
  proc = subprocess.Popen(TRAIN + ['--workdir', workdir, *cli_overrides()],
                          cwd=REPO, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
  assert _wait(lambda: os.path.exists(os.path.join(workdir, '.lock.0')),
               interval=0.001)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out[-3000:]
  assert 'Traceback' not in out
  rerun = loop.train_and_evaluate(quick_config(), workdir)
  assert rerun['status'] == 'done'


@pytest.mark.parametrize('field,value', [
    ('batch_size', 16), ('seed', 7), ('dataset', 'folder:/nonexistent'),
    ('num_train_steps', 6), ('learning_rate', 0.5), ('dtype', 'bfloat16')])
def test_resume_refuses_a_field_that_changes_the_result(straight_run,
                                                        tmp_path, field,
                                                        value):
  workdir = str(tmp_path / 'run')
  shutil.copytree(straight_run[0], workdir)
  before = sorted(os.listdir(workdir))
  with open(os.path.join(workdir, 'config.json'), encoding='utf-8') as f:
    saved = f.read()
  config = quick_config(**{field: value})
  with pytest.raises(UserError, match=f'{field}: saved .*, requested '
                     f'{value!r}.*new --workdir'):
    loop.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, 'config.json'), encoding='utf-8') as f:
    assert f.read() == saved
  assert sorted(os.listdir(workdir)) == before


def test_resume_may_change_logging_and_records_it(straight_run, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(straight_run[0], workdir)
  summary = loop.train_and_evaluate(quick_config(log_every_steps=2),
                                     workdir)
  assert summary['status'] == 'done'
  changes = [r for r in metrics.read_jsonl(os.path.join(
      workdir, 'metrics.jsonl')) if 'config_change' in r]
  assert changes[-1]['config_change'] == {
      'log_every_steps': {'old': 1, 'new': 2}}
  with open(os.path.join(workdir, 'config.json'), encoding='utf-8') as f:
    assert json.load(f)['log_every_steps'] == 2


def test_sweep_rerun_with_other_shared_overrides_is_refused(tmp_path):
  runs = sweep.plan(str(tmp_path), [{'seed': 0}])
  sweep.write_manifest(str(tmp_path), 'configs/q.py', 's.py',
                       ['--config.num_epochs=2'], runs)
  with pytest.raises(UserError, match=r"shared overrides: \['--config."
                     r"num_epochs=2'\] -> \['--config.num_epochs=3'\]"):
    sweep.write_manifest(str(tmp_path), '/abs/configs/q.py', 's.py',
                         ['--config.num_epochs=3'], runs)
  more = sweep.plan(str(tmp_path), [{'seed': 0}, {'seed': 1}])
  sweep.write_manifest(str(tmp_path), '/abs/configs/q.py', 's.py',
                       ['--config.num_epochs=2'], more)
  manifest = workdir_lib.read_json(os.path.join(str(tmp_path), 'sweep.json'))
  assert [r['name'] for r in manifest['runs']] == ['seed=0', 'seed=1']


def test_torn_and_stepless_metric_lines_are_kept_aside(straight_run, tmp_path,
                                                       caplog):
  """A resume truncates only records after the restored step."""
  workdir = str(tmp_path / 'run')
  shutil.copytree(straight_run[0], workdir)
  path = os.path.join(workdir, 'metrics.jsonl')
  with open(path, encoding='utf-8') as f:
    lines = f.read().splitlines()
  middle = len(lines) // 2
  lines[middle:middle] = ['{"step": 3, "train/lo', '{"no_step": 1}']
  with open(path, 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')
  with caplog.at_level(logging.WARNING):
    metrics.truncate_after(path, 4)
  assert 'moved to' in caplog.text
  kept = metrics.read_jsonl(path)
  original = [json.loads(l) for l in lines if l.startswith('{"step"')
              and l.endswith('}')]
  assert kept == [r for r in original if r['step'] <= 4]
  with open(path + '.unparsed', encoding='utf-8') as f:
    assert f.read().splitlines() == ['{"step": 3, "train/lo', '{"no_step": 1}']


def test_eval_overrides_without_config_and_absolute_folder_path(tmp_path):
  from test_data import write_folder  # pylint: disable=g-import-not-at-top
  root = write_folder(tmp_path / 'images', classes=[f'c{i}' for i in range(10)],
                      per_class=10)
  rel = os.path.relpath(root, REPO)
  workdir = str(tmp_path / 'run')
  out = subprocess.run(TRAIN + ['--workdir', workdir, *cli_overrides(),
                                f'--config.dataset=folder:{rel}',
                                "--config.train_split=train[:80%]",
                                "--config.eval_split=train[80%:]"],
                       cwd=REPO, text=True, capture_output=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  saved = workdir_lib.read_json(os.path.join(workdir, 'config.json'))
  assert saved['dataset'] == f'folder:{os.path.abspath(root)}'
  out = subprocess.run([sys.executable, os.path.join(REPO, 'eval.py'),
                        '--workdir', workdir,
                        "--config.eval_split=train[:10%]"],
                       cwd=str(tmp_path), text=True, capture_output=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  result = workdir_lib.read_json(os.path.join(workdir, 'eval.json'))
  assert result['split'] == 'train[:10%]'


def test_out_of_memory_names_what_to_lower(tmp_path, monkeypatch):
  def oom(config):
    raise RuntimeError('RESOURCE_EXHAUSTED: Out of memory allocating '
                       '54918064400 bytes')
  monkeypatch.setattr(loop.experiment, 'setup', oom)
  with pytest.raises(TrainingError, match=r'out of memory .* batch_size 64 '
                     r'.*lower --config.batch_size \(e.g. to 32\) or '
                     r'--config.image_size'):
    loop.train_and_evaluate(quick_config(), str(tmp_path))


def test_init_from_falls_back_past_a_corrupt_latest_checkpoint(straight_run,
                                                                tmp_path):
  from test_faults import _corrupt  # pylint: disable=g-import-not-at-top
  source = str(tmp_path / 'source')
  shutil.copytree(straight_run[0], source)
  _corrupt(os.path.join(source, 'checkpoints', '8'))
  exp_state = final_state(straight_run[0])
  params, _ = checkpoint.load_params(source, *jax.tree.map(
      jax.numpy.asarray, (exp_state[0], exp_state[1])))
  reference = checkpoint.read(straight_run[0], None, step=4)[0]
  np.testing.assert_array_equal(
      jax.tree.leaves(params)[0], jax.tree.leaves(reference['params'])[0])


def test_sweep_accepts_a_generator_and_shortens_long_names(tmp_path):
  path = tmp_path / 'gen.py'
  path.write_text('def get_sweep(config):\n'
                  '  return ({"seed": s} for s in range(2))\n')
  assert sweep.load_sweep(str(path), quick_config()) == [{'seed': 0},
                                                         {'seed': 1}]
  long = {'data_dir': 'x' * 400}
  name = sweep.run_name(long)
  assert len(name) <= 200 and name != sweep.run_name({'data_dir': 'x' * 401})


def test_eta_leaves_compilation_out(capsys, monkeypatch):
  """The printed ETA is from the steady rate after the first (compiling) step."""
  times = [0.0, 100.0, 110.0]  # start, after compile, at step 11
  monkeypatch.setattr(metrics.time, 'perf_counter',
                      lambda: times.pop(0) if len(times) > 1 else times[0])
  progress = metrics.Progress(total=101, initial=0, batch_size=8)
  progress.start_clock(1)  # compilation took 100 s
  progress.log(11, 1.0, 8.0)  # 10 steps in 10 s: 90 steps left
  assert 'eta 90s' in capsys.readouterr().out


def test_a_run_stopped_by_a_signal_is_recorded_stopped_not_failed(tmp_path):
  """Exit 0 without a summary is a preemption: resumable, not a failure."""
  (run,) = sweep.plan(str(tmp_path), [{'seed': 0}])
  os.makedirs(run.workdir)
  assert sweep.finish(run, 0, 1.0, 'c.py', []) == 'stopped'
  assert sweep.finish(run, 1, 1.0, 'c.py', []) == 'failed'
  assert not run.done()


def test_runs_saved_before_a_field_existed_gain_its_old_behaviour(tmp_path):
  """eval.py on an older run: fields added since take their old-behaviour value."""
  from conftest import quick_config  # pylint: disable=g-import-not-at-top
  from inception.training import saved_config, workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  saved = quick_config().to_dict()
  del saved['eval_flip'], saved['ema_decay']
  workdir_lib.write_json(workdir_lib.path(str(tmp_path), workdir_lib.CONFIG),
                         saved)
  config = saved_config.get_config(str(tmp_path))
  assert config.eval_flip is False and config.ema_decay == 0.0
  config.eval_flip = True  # an override now type-checks
  config.ema_decay = 0.99


def test_the_first_window_shows_no_nan_rate_or_infinite_eta(capsys):
  """Before a step is timed, the log line says '-' for the rate and ETA."""
  progress = metrics.Progress(total=10, initial=0, batch_size=8)
  progress.start_clock(1)
  progress.log(1, 2.3, float('nan'))
  out = capsys.readouterr().out
  assert '- img/s  eta -' in out and 'nan' not in out and 'inf' not in out
