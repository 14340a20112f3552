"""Faults lose nothing; runs are reproducible; checkpoints execute no code."""
import errno
import glob
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import (CONFIG, REPO, assert_same_state, cli_overrides,
                      final_state, quick_config, record_steps, records)
from inception.training import checkpoint, sharding, loop
from inception.errors import TrainingError

TRAIN = [sys.executable, 'train.py', '--config', CONFIG]


def _wait(predicate, timeout=180, interval=0.005):
  end = time.time() + timeout
  while time.time() < end:
    if predicate():
      return True
    time.sleep(interval)
  return False


def _saving(workdir):
  return bool(glob.glob(os.path.join(workdir, 'checkpoints',
                                     '*orbax-checkpoint-tmp*')))


def _train_lines(workdir):
  return len(record_steps(workdir, 'train/loss'))


def _assert_complete(workdir, straight_workdir):
  """Same final state as the uninterrupted run; every record exactly once."""
  assert_same_state(final_state(workdir), final_state(straight_workdir))
  assert record_steps(workdir, 'train/loss') == list(range(1, 9))
  assert record_steps(workdir, 'eval/accuracy') == [8]
  assert records(workdir, 'train/loss') == records(straight_workdir,
                                                    'train/loss')


def test_kill9_at_random_moments_loses_nothing(straight_run, tmp_path):
  """kill -9 mid-save and at random moments, then resume: as if never killed."""
  workdir = str(tmp_path)
  cmd = TRAIN + ['--workdir', workdir, *cli_overrides(checkpoint_every_steps=1)]
  rng = np.random.default_rng(0)
  kills = []
  for mode in ('during_save', 'random'):
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    lines = _train_lines(workdir)
    if mode == 'during_save':
      hit = _wait(lambda: _saving(workdir) or proc.poll() is not None)
    else:
      hit = _wait(lambda: _train_lines(workdir) > lines or
                  proc.poll() is not None)
      time.sleep(rng.uniform(0.0, 1.5))
    if proc.poll() is None:
      proc.send_signal(signal.SIGKILL)
      kills.append((mode, _saving(workdir), _train_lines(workdir)))
    proc.wait()
    assert hit
  assert len(kills) >= 2 and kills[0][1], f'no kill landed mid-save: {kills}'
  final = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                         timeout=300)
  assert final.returncode == 0, final.stderr[-3000:]
  assert not _saving(workdir)  # the torn save's temporary dir is cleaned up
  _assert_complete(workdir, straight_run[0])


def _corrupt(step_dir):
  """Truncates every array file of a checkpoint to half its size."""
  files = [f for f in glob.glob(os.path.join(step_dir, 'state', '**', '*'),
                                recursive=True) if os.path.isfile(f)]
  assert files
  for f in files:
    size = os.path.getsize(f)
    with open(f, 'r+b') as fh:
      fh.truncate(size // 2)


def test_corrupt_latest_checkpoint_falls_back(straight_run, tmp_path, caplog):
  workdir = str(tmp_path / 'run')
  shutil.copytree(straight_run[0], workdir)
  _corrupt(os.path.join(workdir, 'checkpoints', '8'))
  with caplog.at_level(logging.WARNING):
    summary = loop.train_and_evaluate(quick_config(), workdir)
  assert 'checkpoint at step 8 is unreadable' in caplog.text
  assert summary['status'] == 'done'
  _assert_complete(workdir, straight_run[0])


def test_all_checkpoints_corrupt_is_an_error_not_a_restart(straight_run,
                                                           tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(straight_run[0], workdir)
  for step in ('4', '8'):
    _corrupt(os.path.join(workdir, 'checkpoints', step))
  with pytest.raises(TrainingError, match=r'every checkpoint .* is unreadable'
                     r' \(steps \[4, 8\]\)'):
    loop.train_and_evaluate(quick_config(), workdir)


def test_sigterm_saves_a_checkpoint_and_exits_zero(tmp_path):
  workdir = str(tmp_path)
  cmd = TRAIN + ['--workdir', workdir, *cli_overrides(
      num_train_steps=100_000, schedule='constant', checkpoint_every_steps=10_000)]
  proc = subprocess.Popen(cmd, cwd=REPO, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
  assert _wait(lambda: _train_lines(workdir) >= 3, interval=0.05)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out[-3000:]
  steps = checkpoint.Checkpointer(workdir, 3).steps()
  assert len(steps) == 1 and steps[0] >= 3
  assert f'stopped: saved a checkpoint at step {steps[0]}' in out
  assert not os.path.exists(os.path.join(workdir, 'summary.json'))
  assert max(record_steps(workdir, 'train/loss')) <= steps[0] + 1


def test_nan_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  # The diverging learning rate is injected by resuming with another config,
  # which the run-identity check (tested in test_reliability.py) would refuse.
  monkeypatch.setattr(loop.identity, 'check_resume', lambda *a: {})
  workdir = str(tmp_path)
  loop.train_and_evaluate(quick_config(), workdir, stop_after_steps=4)
  diverging = quick_config(learning_rate=1e30, warmup_epochs=0.0)
  with pytest.raises(TrainingError, match=r'^step [56]: the (loss|gradient norm) '
                     r'became (nan|inf)'):
    loop.train_and_evaluate(diverging, workdir)
  assert checkpoint.Checkpointer(workdir, 3).steps() == [4]
  summary = loop.train_and_evaluate(quick_config(), workdir)  # still resumable
  assert summary['status'] == 'done'


def test_failed_save_is_reported_and_keeps_previous(tmp_path, monkeypatch):
  workdir = str(tmp_path)
  real_save = ocp.CheckpointManager.save

  def save(self, step, *args, **kwargs):
    if step == 8:
      raise OSError(errno.ENOSPC, 'No space left on device', workdir)
    return real_save(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, 'save', save)
  with pytest.raises(TrainingError, match=r'saving the checkpoint at step 8 '
                     r'failed \(No space left on device.*checkpoints \[4\] are '
                     r'kept'):
    loop.train_and_evaluate(quick_config(), workdir)
  monkeypatch.undo()
  assert checkpoint.Checkpointer(workdir, 3).steps() == [4]
  assert loop.train_and_evaluate(quick_config(), workdir)['step'] == 8


def test_same_seed_is_bitwise_reproducible(straight_run, tmp_path):
  again = str(tmp_path / 'again')
  loop.train_and_evaluate(quick_config(), again)
  assert_same_state(final_state(again), final_state(straight_run[0]))
  for key in ('train/loss', 'train/grad_norm', 'train/accuracy',
              'eval/accuracy', 'eval/loss'):
    assert records(again, key) == records(straight_run[0], key)


def test_another_seed_differs(straight_run, tmp_path):
  other = str(tmp_path / 'seed1')
  loop.train_and_evaluate(quick_config(seed=1), other)
  a = jax.tree.leaves(final_state(other)[0])
  b = jax.tree.leaves(final_state(straight_run[0])[0])
  assert any(not np.array_equal(x, y) for x, y in zip(a, b))
  assert records(other, 'train/loss') != records(straight_run[0], 'train/loss')


def test_checkpoints_hold_no_pickle(straight_run):
  """Orbax's array format and JSON: loading executes no code."""
  files = [f for f in glob.glob(os.path.join(straight_run[0], 'checkpoints',
                                             '**', '*'), recursive=True)
           if os.path.isfile(f)]
  assert files
  for f in files:
    with open(f, 'rb') as fh:
      head = fh.read(2)
    assert not (len(head) == 2 and head[0] == 0x80 and head[1] <= 5), f
  sources = glob.glob(os.path.join(REPO, 'inception', '*.py'))
  for src in sources:
    with open(src, encoding='utf-8') as fh:
      text = fh.read()
    assert 'import pickle' not in text and 'allow_pickle=True' not in text


def test_coordinator_binds_only_to_the_given_address(monkeypatch):
  calls = []
  monkeypatch.setattr(jax.distributed, 'initialize',
                      lambda *a, **k: calls.append((a, k)))
  monkeypatch.setattr(jax.config, 'update', lambda *a: None)
  sharding.initialize_distributed('127.0.0.1:12345', 2, 0)
  assert calls == [(('127.0.0.1:12345', 2, 0),
                    {'coordinator_bind_address': '127.0.0.1:12345'})]
