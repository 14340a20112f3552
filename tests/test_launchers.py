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

import entry_points
from conftest import (CONFIG, REPO, assert_same_state, cli_overrides,
                      final_state, quick_config, record_steps)
from inception.cli import sweep as sweep_main
from inception.sweeps import jobs, launchers, report, sweep
from inception.training import loop
from inception.errors import UserError

submitit = pytest.importorskip('submitit')

SEEDS = 'from inception.sweeps import sweep\n' \
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
  # A save at every step keeps the job running long enough to be signalled
  # mid-run; the reference saves once (the cadence changes no state).
  overrides = {'num_train_steps': 20, 'checkpoint_every_steps': 1,
               'schedule': 'constant'}
  reference = str(tmp_path / 'reference')
  loop.train_and_evaluate(
      quick_config(**{**overrides, 'checkpoint_every_steps': 20}), reference)
  workdir = str(tmp_path / 'run')
  argv = [sys.executable, '-m', 'inception.cli.train', '--config',
          os.path.join(REPO, CONFIG), '--workdir', workdir,
          *cli_overrides(**overrides)]
  executor = submitit.AutoExecutor(folder=str(tmp_path / 'jobs'),
                                   cluster='local')
  executor.update_parameters(timeout_min=10)
  job = executor.submit(jobs.TrainJob(argv, workdir))
  end = time.time() + 300
  while time.time() < end and len(record_steps(workdir, 'train/loss')) < 3:
    time.sleep(0.02)
  assert len(record_steps(workdir, 'train/loss')) < 20, 'finished too soon'
  _signal_task(str(tmp_path / 'jobs'), signal.SIGUSR2)
  assert job.result() == 'done'
  with open(os.path.join(workdir, 'train.log'), encoding='utf-8') as f:
    log = f.read()
  assert 'stopped: saved a checkpoint' in log and 'resuming at step' in log
  assert record_steps(workdir, 'train/loss') == list(range(1, 21))
  assert_same_state(final_state(workdir), final_state(reference))


def test_a_cluster_job_loads_no_jax_before_its_training_process():
  """submitit and Ray unpickle the job in a process of its own: it stays light."""
  code = ('import pickle, sys\n'
          'from inception.sweeps import jobs\n'
          'pickle.loads(pickle.dumps(jobs.TrainJob(["true"], "w")))\n'
          'print(sorted(m for m in ("jax", "flax", "optax", "orbax", "grain")'
          ' if m in sys.modules))')
  out = subprocess.run([sys.executable, '-c', code], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == '[]'


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
  try:  # the launcher starts its local instance (loopback only)
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


# Launcher arguments: every key's type and range, checked before anything runs.

BAD_LAUNCHER_ARGS = [
    ('slurm', 'time=abc', 'time must be a whole number of minutes, at least 1'),
    ('slurm', 'time=0', 'time must be a whole number of minutes, at least 1'),
    ('slurm', 'time=1.5', 'time must be a whole number of minutes, at least 1'),
    ('slurm', 'time=-60', 'time must be a whole number of minutes, at least 1'),
    ('slurm', 'mem_gb=-4', 'mem_gb must be a positive number of GB'),
    ('slurm', 'mem_gb=0', 'mem_gb must be a positive number of GB'),
    ('slurm', 'mem_gb=nan', 'mem_gb must be a positive number of GB'),
    ('slurm', 'mem_gb=4GB', 'mem_gb must be a positive number of GB'),
    ('slurm', 'nodes=0', 'nodes must be a whole number, at least 1'),
    ('slurm', 'nodes=two', 'nodes must be a whole number, at least 1'),
    ('slurm', 'tasks_per_node=0', 'tasks_per_node must be a whole number, at '
     'least 1'),
    ('slurm', 'cpus_per_task=-2', 'cpus_per_task must be a whole number, at '
     'least 1'),
    ('slurm', 'array_parallelism=0', 'array_parallelism must be a whole '
     'number, at least 1'),
    ('slurm', 'gpus_per_node=-1', 'gpus_per_node must be a whole number, at '
     'least 0'),
    ('slurm', 'gpus_per_node=0.5', 'gpus_per_node must be a whole number, at '
     'least 0'),
    ('slurm', 'partition=', 'partition must be a non-empty name'),
    ('slurm', 'account= ', 'account must be a non-empty name'),
    ('slurm', 'qos=high prio', 'qos must be a non-empty name without spaces'),
    ('slurm', 'constraint=', 'constraint must be a non-empty name'),
    ('ray', 'num_cpus=abc', 'num_cpus must be more than 0'),
    ('ray', 'num_cpus=0', 'num_cpus must be more than 0'),
    ('ray', 'num_cpus=-1', 'num_cpus must be more than 0'),
    ('ray', 'num_cpus=inf', 'num_cpus must be more than 0'),
    ('ray', 'num_cpus=1.5', 'a fraction of one (at least 0.0001) or a whole'),
    ('ray', 'num_gpus=-0.5', 'num_gpus must be at least 0'),
    ('ray', 'num_gpus=one', 'num_gpus must be at least 0'),
    ('ray', 'num_gpus=0.00001', 'a fraction of one (at least 0.0001)'),
]


@pytest.mark.parametrize('launcher,item,phrase', BAD_LAUNCHER_ARGS)
def test_every_launcher_arg_is_checked_before_anything_starts(launcher, item,
                                                              phrase):
  with pytest.raises(UserError) as e:
    launchers.parse_args(launcher, [item])
  assert phrase in str(e.value) and '\n' not in str(e.value), str(e.value)
  assert str(e.value).startswith(f'--launcher_args {item.partition("=")[0]}=')


def test_launcher_args_of_the_right_type_are_typed_and_given_once():
  assert launchers.parse_args('slurm', [
      'partition=gpu', 'time=240', 'nodes=2', 'tasks_per_node=4',
      'gpus_per_node=0', 'cpus_per_task=8', 'mem_gb=1.5', 'account=123',
      'qos=high', 'constraint=a100&ib', 'array_parallelism=3']) == {
          'partition': 'gpu', 'time': 240, 'nodes': 2, 'tasks_per_node': 4,
          'gpus_per_node': 0, 'cpus_per_task': 8, 'mem_gb': 1.5,
          'account': '123', 'qos': 'high', 'constraint': 'a100&ib',
          'array_parallelism': 3}
  assert launchers.parse_args('ray', ['num_cpus=0.5', 'num_gpus=0']) == {
      'num_cpus': 0.5, 'num_gpus': 0}
  assert launchers.parse_args('ray', ['num_cpus=2', 'num_gpus=0.25']) == {
      'num_cpus': 2, 'num_gpus': 0.25}
  with pytest.raises(UserError, match='sets time twice'):
    launchers.parse_args('slurm', ['time=60', 'time=120'])


def _one_line_error(code, stdout, stderr):
  """The command's one line, ``error: ...``; asserts exit 2 and no traceback."""
  lines = [l for l in stderr.splitlines() if l.strip()
           and 'oneDNN' not in l and 'absl::InitializeLog' not in l]
  assert code == 2, (code, stderr[-2000:])
  assert 'Traceback' not in stderr + stdout, stderr[-3000:]
  assert len(lines) == 1 and lines[0].startswith('error: '), lines
  assert not stdout.strip(), stdout[-2000:]
  return lines[0]


_CLUSTER_ENV = ('SLURM_', 'OMPI_', 'TPU_', 'MEGASCALE_', 'KUBERNETES_', 'PMI_')


def _run_together(cases: dict, timeout: float = 300) -> dict:
  """name -> (exit status, stdout, stderr) of ``python <argv>`` for each case.

  The processes start together (``entry_points``), outside any cluster job,
  so that JAX detects none.
  """
  env = {k: v for k, v in os.environ.items() if not k.startswith(_CLUSTER_ENV)}
  return entry_points.run_together(
      {name: (argv, env) for name, argv in cases.items()}, timeout)


# The Ray launcher's local instance and its resource checks.


def _loopback(ip: str) -> bool:
  import ipaddress  # pylint: disable=g-import-not-at-top
  address = ipaddress.ip_address(ip.split('%')[0])
  if address.version == 6 and address.ipv4_mapped:
    address = address.ipv4_mapped
  return address.is_loopback


def _listening(psutil, processes) -> dict:
  """(pid, ip, port) -> process name, for each listening TCP socket."""
  out = {}
  for p in processes:
    try:
      for c in p.net_connections(kind='tcp'):
        if c.status == psutil.CONN_LISTEN:
          out[(p.pid, c.laddr.ip, c.laddr.port)] = p.name()
    except psutil.Error:
      pass  # exited meanwhile
  return out


def _quiet(*_):
  pass


def test_local_ray_instance_listens_only_on_loopback():
  """Every server of the launcher's own Ray instance binds 127.0.0.1 only."""
  ray = pytest.importorskip('ray')
  psutil = pytest.importorskip('psutil')
  me = psutil.Process()
  before = _listening(psutil, [me, *me.children(recursive=True)])
  try:
    assert launchers.run_ray([], CONFIG, [], {'num_cpus': 1}, echo=_quiet) == {}
    task = ray.remote(num_cpus=1)(lambda: os.getpid())  # pylint: disable=unnecessary-lambda
    assert ray.get(task.remote()) != os.getpid()  # a worker is up too
    session = ray._private.worker._global_node.get_session_dir_path()  # pylint: disable=protected-access
    processes = {p.pid: p for p in [me, *me.children(recursive=True)]}
    for p in psutil.process_iter():  # also any the instance did not parent
      try:
        if session in ' '.join(p.cmdline()):
          processes[p.pid] = p
      except psutil.Error:
        pass
    sockets = {k: v for k, v in _listening(psutil, processes.values()).items()
               if k not in before}
    assert {'gcs_server', 'raylet'} <= set(sockets.values()), sockets
    outside = {k: v for k, v in sockets.items() if not _loopback(k[1])}
    assert not outside, f'Ray listens beyond this machine: {outside}'
    for p in processes.values():  # no dashboard: its head runs headless
      cmdline = ' '.join(p.cmdline())
      if 'dashboard/dashboard.py' in cmdline:
        assert '--minimal' in cmdline, cmdline
    assert ray.nodes()[0]['NodeManagerAddress'] == '127.0.0.1'
    # A task that no node of the running instance can hold is refused (Ray
    # would wait for it forever); the instance, not started there, stays.
    with pytest.raises(UserError, match=f'has {os.cpu_count()}; ask for'):
      launchers.run_ray([], CONFIG, [], {'num_cpus': os.cpu_count() + 1},
                        echo=_quiet)
    with pytest.raises(UserError, match='num_gpus=1000: each run would hold'):
      launchers.run_ray([], CONFIG, [], {'num_gpus': 1000}, echo=_quiet)
    assert ray.is_initialized()
  finally:
    ray.shutdown()


def test_ray_task_larger_than_this_machine_is_refused_before_ray_starts():
  ray = pytest.importorskip('ray')
  gpus = launchers.local_gpus()
  too_big = [{'num_cpus': os.cpu_count() + 1}, {'num_cpus': 100}]
  if gpus is not None:
    too_big.append({'num_gpus': gpus + 1})
  for args in too_big:
    with pytest.raises(UserError, match='but this machine has'):
      launchers.run_ray([], CONFIG, [], args, echo=_quiet)
    assert not ray.is_initialized()


class _FakeCluster:
  """The part of the ``ray`` module run_ray uses, joined to a fake cluster."""

  def __init__(self, nodes, error=None):
    self._nodes, self._error = nodes, error
    self.connected, self.task_options = False, None

  def is_initialized(self):
    return self.connected

  def init(self, address):
    if self._error:
      raise self._error
    self.address, self.connected = address, True

  def nodes(self):
    return self._nodes

  def shutdown(self):
    self.connected = False

  def remote(self, **options):
    self.task_options = options
    return lambda f: f


def test_ray_cluster_task_larger_than_every_node_is_refused(monkeypatch):
  """A task must fit one live node of --ray_address's cluster."""
  cluster = _FakeCluster([
      {'Alive': True, 'Resources': {'CPU': 8.0, 'GPU': 2.0}},
      {'Alive': True, 'Resources': {'CPU': 16.0}},
      {'Alive': False, 'Resources': {'CPU': 64.0, 'GPU': 8.0}}])
  monkeypatch.setattr(launchers, '_require', lambda name: cluster)
  for args, phrase in [({'num_cpus': 32}, 'num_cpus=32: each run would hold '
                        '32 CPU(s), but the largest node of the Ray cluster '
                        'at head:6379 has 16'),
                       ({'num_gpus': 4}, 'num_gpus=4: each run would hold 4 '
                        'GPU(s)')]:
    with pytest.raises(UserError) as e:
      launchers.run_ray([], CONFIG, [], args, address='head:6379', echo=_quiet)
    assert phrase in str(e.value), str(e.value)
    assert not cluster.connected
  assert launchers.run_ray([], CONFIG, [], {'num_cpus': 16, 'num_gpus': 2},
                           address='head:6379', echo=_quiet) == {}
  assert cluster.task_options == {'num_cpus': 16, 'num_gpus': 2}
  unreachable = _FakeCluster([], error=ConnectionError('no GCS\nat head:1'))
  monkeypatch.setattr(launchers, '_require', lambda name: unreachable)
  with pytest.raises(UserError, match='^--ray_address=head:1: cannot connect '
                     'to a Ray cluster there: no GCS$'):
    launchers.run_ray([], CONFIG, [], {}, address='head:1', echo=_quiet)


# Multi-host flags of train.py (the SLURM launcher's tasks pass
# --num_processes=-1): refused before JAX starts when they disagree.

# (--coordinator_address, --num_processes, --process_id; None: not given) ->
# phrase of the error line.
MULTI_HOST_CASES = [
    ('', 2, 0, '--num_processes=2 without --coordinator_address'),
    ('', 2, None, '--num_processes=2 without --coordinator_address'),
    ('', -1, None, 'takes the processes of a cluster job, but none was '
     'detected'),
    ('', 2, 5, '--process_id=5 must be between 0 and 1'),
    ('127.0.0.1:1234', 2, 2, '--process_id=2 must be between 0 and 1'),
    ('127.0.0.1:1234', 2, -1, '--process_id=-1 must be at least 0'),
    ('', None, 1, '--process_id=1 needs --num_processes'),
    ('', 1, 0, '--process_id=0 without --coordinator_address'),
    ('', 0, None, '--num_processes=0 must be at least 1'),
    ('127.0.0.1:1234', -3, 0, '--num_processes=-3 must be at least 1'),
    ('localhost', 2, 0, "--coordinator_address='localhost' must be host:port"),
    ('127.0.0.1:70000', 2, 0, 'must be host:port'),
    ('127.0.0.1:0', 2, 0, 'must be host:port'),
    (':1234', 2, 0, 'must be host:port'),
    ('http://10.0.0.1:1234', 2, 1, 'must be host:port'),
    ('::1:1234', 2, 1, 'must be host:port'),
    ('127.0.0.1:1234', None, None, 'starts a multi-process job'),
    ('127.0.0.1:1234', 2, None, 'starts a multi-process job'),
]


def _outside_any_cluster(monkeypatch):
  for k in list(os.environ):
    if k.startswith(_CLUSTER_ENV):
      monkeypatch.delenv(k)


@pytest.mark.parametrize('address,num_processes,process_id,phrase',
                         MULTI_HOST_CASES)
def test_inconsistent_multi_host_flags_are_refused(monkeypatch, address,
                                                   num_processes, process_id,
                                                   phrase):
  from inception.training import sharding  # pylint: disable=g-import-not-at-top
  _outside_any_cluster(monkeypatch)
  with pytest.raises(UserError) as e:
    sharding.check_distributed(address, num_processes, process_id)
  assert phrase in str(e.value) and '\n' not in str(e.value), str(e.value)


# Bad input on the command line: one line, exit status 2, nothing written.
# name -> (entry point, flags, phrase of the error line); the other values of
# each class are checked in-process above.
CLI_CASES = {
    'slurm_time': ('sweep.py', ['--launcher=slurm', '--dry_run',
                                '--launcher_args=partition=gpu,time=abc'],
                   'time must be a whole number of minutes'),
    'ray_cpus_type': ('sweep.py', ['--launcher=ray',
                                   '--launcher_args=num_cpus=abc'],
                      'num_cpus must be more than 0'),
    # More CPUs than the local instance would have: refused, not waited on.
    'ray_cpus_too_many': ('sweep.py', [
        '--launcher=ray', f'--launcher_args=num_cpus={os.cpu_count() + 1}'],
                          f'but this machine has {os.cpu_count()}'),
    'no_coordinator': ('train.py', ['--num_processes=2', '--process_id=0'],
                       '--num_processes=2 without --coordinator_address'),
    'auto_without_cluster': ('train.py', ['--num_processes=-1'],
                             'but none was detected'),
    'process_id_too_big': ('train.py', ['--process_id=5', '--num_processes=2'],
                           '--process_id=5 must be between 0 and 1'),
}


@pytest.fixture(scope='module')
def cli_results(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('bad_cli_input')
  sweep_file = _sweep_file(tmp)
  cases = {}
  for name, (entry, flags, _) in CLI_CASES.items():
    sweep_flags = ['--sweep', sweep_file] if entry == 'sweep.py' else []
    cases[name] = [entry, '--config', CONFIG, *sweep_flags, '--workdir',
                   str(tmp / name), *cli_overrides(), *flags]
  return tmp, _run_together(cases, timeout=120)


@pytest.mark.parametrize('name', sorted(CLI_CASES))
def test_bad_launcher_and_multi_host_flags_are_one_line(cli_results, name):
  tmp, results = cli_results
  line = _one_line_error(*results[name])
  assert CLI_CASES[name][2] in line, line
  assert not os.path.exists(tmp / name), 'a refused command wrote files'


SLURM_TASK_ENV = {'SLURM_JOB_ID': '4242', 'SLURM_STEP_NODELIST': 'node[1-2]',
                  'SLURM_NTASKS': '2', 'SLURM_PROCID': '1',
                  'SLURM_LOCALID': '0'}


def test_multi_host_flags_in_a_slurm_job_leave_the_rest_to_jax(monkeypatch):
  """In a SLURM task JAX reads what the flags leave out; nothing is refused."""
  import jax  # pylint: disable=g-import-not-at-top
  from inception.training import sharding  # pylint: disable=g-import-not-at-top
  _outside_any_cluster(monkeypatch)
  assert sharding.detected_cluster() == ''
  sharding.check_distributed('', None, None)  # one process
  sharding.check_distributed('', 1, None)
  sharding.check_distributed('127.0.0.1:1234', 2, 1)
  for k, v in SLURM_TASK_ENV.items():
    monkeypatch.setenv(k, v)
  assert sharding.detected_cluster() == 'SlurmCluster'
  sharding.check_distributed('', -1, None)  # TrainJob's --num_processes=-1
  sharding.check_distributed('', 2, None)
  sharding.check_distributed('', 2, 1)
  with pytest.raises(UserError, match='--process_id=2 must be between 0 and 1'):
    sharding.check_distributed('', 2, 2)
  with pytest.raises(UserError, match='must be host:port'):
    sharding.check_distributed('node1', -1, None)
  calls = []
  monkeypatch.setattr(jax.distributed, 'initialize',
                      lambda *a, **k: calls.append((a, k)))
  monkeypatch.setattr(jax.config, 'update', lambda *a: None)
  sharding.initialize_distributed('', -1, -1)
  sharding.initialize_distributed('', 2, -1)
  sharding.initialize_distributed('', 1, -1)  # one process: no JAX service
  assert calls == [((), {}),
                   ((None, 2, None), {'coordinator_bind_address': None})]
