"""--profile_steps: a jax.profiler trace of steady-state train steps."""
import glob
import os

import jax
import pytest

from conftest import CONFIG, quick_config, run_cli
from inception.training import loop, metrics
from inception.errors import TrainingError


def _traces(workdir):
  return glob.glob(os.path.join(workdir, 'profile', 'plugins', 'profile', '*',
                                '*.xplane.pb'))


def _no_trace_running():
  with pytest.raises(RuntimeError):
    jax.profiler.stop_trace()
  return True


def test_profile_steps_writes_a_tensorboard_trace(tmp_path, capsys):
  workdir = str(tmp_path)
  summary = loop.train_and_evaluate(quick_config(), workdir, profile_steps=2)
  assert summary['status'] == 'done' and summary['step'] == 8
  assert _traces(workdir) and os.path.getsize(_traces(workdir)[0]) > 0
  out = capsys.readouterr().out
  # After the first step, which compiles: steps 2 and 3.
  line, = [l for l in out.splitlines() if l.startswith('profile: ')]
  assert 'steps 2-3 traced into' in line
  assert f'tensorboard --logdir {workdir}' in line
  assert _no_trace_running()


def test_a_run_shorter_than_the_profile_stops_the_trace(tmp_path, capsys):
  workdir = str(tmp_path)
  loop.train_and_evaluate(quick_config(num_train_steps=3), workdir,
                           profile_steps=10)
  assert _traces(workdir)
  assert 'profile: steps 2-3 traced' in capsys.readouterr().out
  assert _no_trace_running()


def test_an_error_while_tracing_stops_the_trace(tmp_path, monkeypatch):
  workdir = str(tmp_path)
  calls = []

  def failing(pending):
    calls.append(pending)
    if len(calls) == 3:
      raise TrainingError('injected')

  monkeypatch.setattr(metrics, 'check_finite', failing)
  with pytest.raises(TrainingError, match='injected'):
    loop.train_and_evaluate(quick_config(), workdir, profile_steps=5)
  assert _traces(workdir)
  assert _no_trace_running()


def test_no_profile_by_default(tmp_path):
  loop.train_and_evaluate(quick_config(num_train_steps=2), str(tmp_path))
  assert not os.path.exists(os.path.join(tmp_path, 'profile'))


def test_negative_profile_steps_is_one_line(tmp_path):
  with pytest.raises(ValueError, match='profile_steps=-1'):
    loop.train_and_evaluate(quick_config(), str(tmp_path / 'lib'),
                             profile_steps=-1)
  workdir = str(tmp_path / 'w')
  out = run_cli('train.py', '--config', CONFIG, '--workdir', workdir,
                '--profile_steps=-1')
  lines = [l for l in out.stderr.splitlines() if l.strip()
           and 'oneDNN' not in l and 'absl::InitializeLog' not in l]
  assert out.returncode == 2 and 'Traceback' not in out.stderr
  assert lines == ['error: --profile_steps=-1 must be 0 (off) or more'], lines
  assert not os.path.exists(workdir)
