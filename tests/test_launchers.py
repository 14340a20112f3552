"""Sweeps on cluster engines: SLURM through submitit's local executor, and Ray.

submitit's ``cluster='local'`` runs the ``slurm`` launcher's code path (job
arrays, requeue on a time limit) as real subprocess jobs on this machine; a
local Ray instance runs the ``ray`` launcher. No SLURM scheduler or GPU is
involved: see the README's "Running on a cluster".
"""
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import (CONFIG, REPO, assert_same_state, cli_overrides,
                      final_state, quick_config, record_steps)
from inception import launchers, report, sweep, sweep_main, train
from inception.errors import UserError

submitit = pytest.importorskip('submitit')

SEEDS = 'from inception import sweep\n' \
        'def get_sweep(config):\n  return sweep.axis("seed", [0, 1])\n'


def _sweep_file(tmp_path):
  path = tmp_path / 'seeds.py'
  path.write_text(SEEDS)
  return str(path)


def _cmd(tmp_path, workdir, *extra):
  return [sys.executable, 'sweep.py', '--config', CONFIG, '--sweep',
          _sweep_file(tmp_path), '--workdir', workdir, *cli_overrides(),
          *extra]


def _assert_runs_complete(workdir, straight_workdir):
  runs = report.load_runs(workdir)
  assert [r.status for r in runs] == ['done', 'done']
  for r in runs:
    assert record_steps(r.workdir, 'train/loss') == list(range(1, 9))
  assert_same_state(final_state(runs[0].workdir), final_state(straight_workdir))


def test_slurm_launcher_killed_and_restarted_completes_every_run_once(
    straight_run, tmp_path):
  """submitit jobs outlive a killed launcher; the restart waits, never resubmits."""
  workdir = str(tmp_path / 'w')
  cmd = _cmd(tmp_path, workdir, '--launcher=slurm', '--submitit_cluster=local',
             '--launcher_args=time=10')
  first = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
  seed0 = os.path.join(workdir, 'seed=0')
  end = time.time() + 300
  while time.time() < end and not record_steps(seed0, 'train/loss'):
    time.sleep(0.05)
  first.send_signal(signal.SIGKILL)
  first.wait()
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  _assert_runs_complete(workdir, straight_run[0])
  assert 'results.md' in out.stdout


def _signal_task(jobs_dir: str, sig):
  """Sends ``sig`` to the submitit task process, as SLURM does at a time limit."""
  for pid in os.listdir('/proc'):
    if not pid.isdigit():
      continue
    try:
      with open(f'/proc/{pid}/cmdline', 'rb') as f:
        cmdline = f.read().decode(errors='replace')
    except OSError:
      continue
    if 'submitit.core._submit' in cmdline and jobs_dir in cmdline:
      os.kill(int(pid), sig)
      return
  raise AssertionError('no submitit task process found')


def test_slurm_time_limit_requeues_and_resumes_from_the_checkpoint(tmp_path):
  """A job's time-limit signal: the run saves, submitit requeues, it resumes."""
  overrides = {'num_train_steps': 40, 'checkpoint_every_steps': 1,
               'schedule': 'constant'}
  reference = str(tmp_path / 'reference')
  train.train_and_evaluate(quick_config(**overrides), reference)
  workdir = str(tmp_path / 'run')
  argv = [sys.executable, '-m', 'inception.train_main', '--config',
          os.path.join(REPO, CONFIG), '--workdir', workdir,
          *cli_overrides(**overrides)]
  executor = submitit.AutoExecutor(folder=str(tmp_path / 'jobs'),
                                   cluster='local')
  executor.update_parameters(timeout_min=10)
  job = executor.submit(launchers.TrainJob(argv, workdir))
  end = time.time() + 300
  while time.time() < end and len(record_steps(workdir, 'train/loss')) < 3:
    time.sleep(0.02)
  assert len(record_steps(workdir, 'train/loss')) < 40, 'finished too soon'
  _signal_task(str(tmp_path / 'jobs'), signal.SIGUSR2)
  assert job.result() == 'done'
  with open(os.path.join(workdir, 'train.log'), encoding='utf-8') as f:
    log = f.read()
  assert 'stopped: saved a checkpoint' in log and 'resuming at step' in log
  assert record_steps(workdir, 'train/loss') == list(range(1, 41))
  assert_same_state(final_state(workdir), final_state(reference))


def test_slurm_dry_run_prints_the_sbatch_script(tmp_path):
  workdir = str(tmp_path / 'w')
  out = subprocess.run(_cmd(tmp_path, workdir, '--launcher=slurm', '--dry_run',
                            '--launcher_args=partition=gpu,time=240,'
                            'gpus_per_node=4,cpus_per_task=8,nodes=2,'
                            'tasks_per_node=4,account=proj'),
                       cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  for line in ('#SBATCH --partition=gpu', '#SBATCH --time=240',
               '#SBATCH --gpus-per-node=4', '#SBATCH --cpus-per-task=8',
               '#SBATCH --nodes=2', '#SBATCH --ntasks-per-node=4',
               '#SBATCH --account=proj', 'submitit.core._submit'):
    assert line in out.stdout, line
  assert '#SBATCH --mem' not in out.stdout  # only what the user set
  assert not os.path.exists(workdir)


def test_ray_launcher_runs_the_sweep(straight_run, tmp_path):
  ray = pytest.importorskip('ray')
  ray.init(num_cpus=2, include_dashboard=False)
  try:
    workdir = str(tmp_path / 'w')
    from conftest import quick_config as cfg  # pylint: disable=g-import-not-at-top,reimported
    results = sweep_main.run_sweep(cfg(), os.path.join(REPO, CONFIG),
                                   _sweep_file(tmp_path), workdir,
                                   cli_overrides(), launcher='ray',
                                   launcher_args=['num_cpus=1'])
  finally:
    ray.shutdown()
  assert results == {'seed=0': 'done', 'seed=1': 'done'}
  _assert_runs_complete(workdir, straight_run[0])


def test_launcher_arguments_and_missing_packages_are_one_line_errors():
  with pytest.raises(UserError, match="takes key=value with keys partition"):
    launchers.parse_args('slurm', ['gpus=2'])
  with pytest.raises(UserError, match='requirements-cluster.txt'):
    launchers._require('no_such_cluster_package')  # pylint: disable=protected-access
  assert launchers.parse_args('slurm', ['time=60', 'partition=gpu']) == {
      'time': 60, 'partition': 'gpu'}
