"""Where a sweep's runs train: local processes, SLURM (submitit) or Ray.

Every launcher trains the same argument list per run (``Run.command``: ``python
-m inception.cli.train ...``) and keeps the sweep's semantics: finished runs
are skipped, an interrupted run resumes from its checkpoint, a failed run is
recorded with its error in ``status.json`` while the others go on, and a
launcher killed and started again completes every run exactly once (a run
whose job is still training is waited for, not submitted twice).

* ``local``: one subprocess per run, ``parallel`` at a time
  (``inception.sweeps.sweep.execute``).
* ``slurm``: submitit. Each run is a task of one job array; a run whose time
  limit or preemption signal arrives asks its training process to save
  (SIGTERM), then submitit requeues it and it resumes from the checkpoint.
  With ``nodes > 1`` each task is one JAX process and
  ``jax.distributed.initialize()`` reads SLURM's environment.
* ``ray``: one Ray task per run, holding the CPUs and GPUs it asks for, on
  ``ray_address`` or a local Ray instance that listens on 127.0.0.1 only.

Every ``--launcher_args`` value is checked (``parse_args``) before anything
is written or started, and a Ray task that no node could hold is refused
before any run starts.

submitit and Ray are optional (``requirements-cluster.txt``).
"""
import contextlib
import fcntl
import math
import os
import sys
import time

from inception.sweeps import jobs, sweep
from inception.training import workdir as workdir_lib
from inception.errors import UserError, first_line

LAUNCHERS = ('local', 'slurm', 'ray')
# --launcher_args keys -> submitit AutoExecutor parameters.
SLURM_ARGS = {'partition': 'slurm_partition', 'time': 'timeout_min',
              'nodes': 'nodes', 'tasks_per_node': 'tasks_per_node',
              'gpus_per_node': 'gpus_per_node', 'cpus_per_task': 'cpus_per_task',
              'mem_gb': 'mem_gb', 'account': 'slurm_account',
              'qos': 'slurm_qos', 'constraint': 'slurm_constraint',
              'array_parallelism': 'slurm_array_parallelism'}
RAY_ARGS = ('num_cpus', 'num_gpus')


def _require(module: str):
  try:
    return __import__(module)
  except ImportError:
    raise UserError(f'the {module} launcher needs the {module} package: pip '
                    'install -r requirements-cluster.txt') from None


def _text(key: str, value: str) -> str:
  """A SLURM name (partition, account, ...): non-empty, one word."""
  if not value.strip() or any(c.isspace() for c in value):
    raise UserError(f'--launcher_args {key}={value!r}: {key} must be a '
                    'non-empty name without spaces')
  return value


def _number(value: str) -> float | None:
  """``value`` as a finite number, or None when it is not one."""
  try:
    number = float(value)
  except ValueError:
    return None
  return number if math.isfinite(number) else None


def _whole(minimum: int, unit: str = ''):
  """A checker for a whole number at least ``minimum`` (``unit``: its unit)."""

  def check(key: str, value: str) -> int:
    number = _number(value)
    if number is None or not number.is_integer() or number < minimum:
      raise UserError(f'--launcher_args {key}={value}: {key} must be a whole '
                      f'number{unit}, at least {minimum}')
    return int(number)

  return check


def _mem_gb(key: str, value: str) -> int | float:
  """Memory in GB: positive, and at least the 1 MB SLURM can be asked for."""
  number = _number(value)
  if number is None or number * 1024 < 1:
    raise UserError(f'--launcher_args {key}={value}: {key} must be a positive '
                    'number of GB (at least 1 MB, e.g. mem_gb=16)')
  return int(number) if number.is_integer() else number


def _ray_resource(zero_allowed: bool):
  """A checker for the CPUs or GPUs a Ray task holds.

  Ray takes a fraction of one (to four decimal places) or a whole number;
  ``zero_allowed``: a task may hold none (GPUs), else it needs some (CPUs).
  """

  def check(key: str, value: str) -> int | float:
    number = _number(value)
    if (number is None or number < 0 or (number == 0 and not zero_allowed) or
        0 < number < 1e-4 or (number > 1 and not number.is_integer())):
      least = 'at least 0' if zero_allowed else 'more than 0'
      raise UserError(f'--launcher_args {key}={value}: {key} must be {least}, '
                      'a fraction of one (at least 0.0001) or a whole number, '
                      f'e.g. {key}=2 or {key}=0.5')
    return int(number) if number.is_integer() else number

  return check


# key -> checker(key, value string) -> typed value, raising UserError.
_CHECKS = {
    'slurm': {'partition': _text, 'time': _whole(1, ' of minutes'),
              'nodes': _whole(1), 'tasks_per_node': _whole(1),
              'gpus_per_node': _whole(0), 'cpus_per_task': _whole(1),
              'mem_gb': _mem_gb, 'account': _text, 'qos': _text,
              'constraint': _text, 'array_parallelism': _whole(1)},
    'ray': {'num_cpus': _ray_resource(zero_allowed=False),
            'num_gpus': _ray_resource(zero_allowed=True)},
    'local': {},
}


def parse_args(launcher: str, items: list[str]) -> dict:
  """``['partition=gpu', 'time=60']`` -> typed values, checked against ``launcher``.

  Every value's type and range is checked here, before anything is written
  or started: a bad value is one UserError line, not a failure inside
  submitit or Ray after the sweep has begun.
  """
  if launcher not in LAUNCHERS:
    raise UserError(f'--launcher={launcher!r}; use one of {", ".join(LAUNCHERS)}')
  allowed = {'slurm': tuple(SLURM_ARGS), 'ray': RAY_ARGS, 'local': ()}[launcher]
  out = {}
  for item in items:
    key, sep, value = item.partition('=')
    if not sep or key not in allowed:
      raise UserError(f'--launcher_args {item!r}: the {launcher} launcher takes'
                      f' key=value with keys {", ".join(allowed) or "(none)"}')
    if key in out:
      raise UserError(f'--launcher_args sets {key} twice; give it once')
    out[key] = _CHECKS[launcher][key](key, value)
  return out


def _held(path: str) -> bool:
  """Whether another process holds an exclusive flock on ``path``."""
  if not os.path.exists(path):
    return False
  with open(path, 'a', encoding='utf-8') as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      return True
    fcntl.flock(f, fcntl.LOCK_UN)
  return False


def busy(run: sweep.Run) -> bool:
  """Whether a job of an earlier launcher is still training ``run``."""
  return _held(workdir_lib.path(run.workdir, jobs.JOB_LOCK)) or _held(
      workdir_lib.path(run.workdir, '.lock.0'))


def wait_for_earlier_jobs(runs: list[sweep.Run], echo, poll: float = 1.0):
  """Waits while a job from an earlier (killed) launcher still trains a run."""
  waiting = [r for r in runs if busy(r)]
  if waiting:
    echo(f'waiting for {len(waiting)} run(s) still training from an earlier '
         'launch')
  while waiting:
    time.sleep(poll)
    waiting = [r for r in waiting if busy(r)]


def _still_to_train(runs, echo):
  """(results of the runs already done, the runs to train now).

  Runs an earlier launcher's job is still training are waited for first.
  """
  results, pending = sweep.split_done(runs, echo)
  wait_for_earlier_jobs(pending, echo)
  results.update({r.name: 'skipped' for r in pending if r.done()})
  return results, [r for r in pending if not r.done()]


def _slurm_executor(folder: str, args: dict, cluster: str | None):
  submitit = _require('submitit')
  executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
  params = {SLURM_ARGS[k]: v for k, v in args.items()}
  if 'nodes' in args and 'tasks_per_node' not in args:
    params['tasks_per_node'] = 1
  executor.update_parameters(name='inception-sweep', **params)
  return executor


def sbatch_script(folder: str, args: dict, num_runs: int) -> str:
  """The sbatch script submitit would submit for the sweep's job array."""
  _require('submitit')
  from submitit.slurm import slurm  # pylint: disable=g-import-not-at-top
  params = {SLURM_ARGS[k].removeprefix('slurm_'): v for k, v in args.items()}
  renames = {'timeout_min': 'time', 'tasks_per_node': 'ntasks_per_node'}
  params = {renames.get(k, k): v for k, v in params.items()}
  if 'mem_gb' in params:  # as submitit writes it: whole GB, else MB
    params['mem'] = slurm._convert_mem(params.pop('mem_gb'))  # pylint: disable=protected-access
  if 'nodes' in params and 'ntasks_per_node' not in params:
    params['ntasks_per_node'] = 1
  folder = os.path.join(os.path.abspath(folder), '%j')
  command = ' '.join([sys.executable, '-u', '-m', 'submitit.core._submit',
                      folder])
  # submitit's own script writer (SlurmExecutor needs srun on this machine).
  return slurm._make_sbatch_string(  # pylint: disable=protected-access
      command=command, folder=folder, job_name='inception-sweep',
      map_count=num_runs, **params)


def run_slurm(runs, config_arg, extra, args: dict, folder: str, echo=print,
              cluster: str | None = None, poll: float = 1.0) -> dict:
  """Submits the runs not yet done as one job array and waits for them."""
  executor = _slurm_executor(folder, args, cluster)
  results, pending = _still_to_train(runs, echo)
  submitted = []
  with executor.batch():
    for run in pending:
      submitted.append((run, executor.submit(jobs.TrainJob(
          run.command(config_arg, extra), run.workdir))))
  started = time.time()
  for run, job in submitted:
    sweep.write_status(run, {'status': 'running', 'launcher': 'slurm',
                             'job_id': job.job_id, 'overrides': run.overrides})
    echo(f'submitted {run.name} (job {job.job_id})')
  for run, job in submitted:
    while not job.done():
      time.sleep(poll)
    try:
      job.result()
      error = None
    except Exception as e:  # pylint: disable=broad-except
      error = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
    results[run.name] = sweep.finish(run, 0 if error is None else 1,
                                     time.time() - started, config_arg, extra,
                                     echo, error=error)
  return results


# Ray's switch for its single-machine mode (a node address of 127.0.0.1 is
# kept, not replaced by the machine's routable address).
_RAY_CLUSTER_SWITCH = 'RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER'


@contextlib.contextmanager
def _ray_single_machine_mode():
  """Ray's single-machine mode while a local instance starts.

  ``ray.init`` replaces a ``_node_ip_address`` of 127.0.0.1 by the machine's
  routable address unless this mode is on; Ray's servers bind to loopback
  only when the node address stays 127.0.0.1. The processes started meanwhile
  (GCS, raylet, agents) inherit the switch; the driver's is restored after.
  """
  from ray._private import ray_constants  # pylint: disable=g-import-not-at-top
  saved_env = os.environ.get(_RAY_CLUSTER_SWITCH)
  saved_flag = ray_constants.ENABLE_RAY_CLUSTER
  os.environ[_RAY_CLUSTER_SWITCH] = '0'
  ray_constants.ENABLE_RAY_CLUSTER = False
  try:
    yield
  finally:
    ray_constants.ENABLE_RAY_CLUSTER = saved_flag
    if saved_env is None:
      os.environ.pop(_RAY_CLUSTER_SWITCH, None)
    else:
      os.environ[_RAY_CLUSTER_SWITCH] = saved_env


def local_gpus() -> int | None:
  """The GPUs a local Ray instance gets, found as Ray finds them; None: unknown.

  Ray counts the node's GPUs and caps them by CUDA_VISIBLE_DEVICES (or the
  variable of its GPU kind).
  """
  try:
    from ray._private import accelerators  # pylint: disable=g-import-not-at-top
    manager = accelerators.get_accelerator_manager_for_resource('GPU')
    if manager is None:
      return 0
    count = manager.get_current_node_num_accelerators()
    visible = manager.get_current_process_visible_accelerator_ids()
  except Exception:  # pylint: disable=broad-except
    return None  # another Ray: checked once the instance runs
  return count if visible is None else min(count, len(visible))


def start_local_ray(ray, num_cpus: int, num_gpus: int | None = None):
  """A Ray instance on this machine that no other machine can reach.

  Every Ray server (GCS, raylet and its object manager, the workers, the
  agents) listens on 127.0.0.1 only, and no dashboard is started: a local
  instance runs this machine's tasks, and Ray's ports accept work from
  anyone who reaches them. ``--ray_address`` joins a real cluster instead.

  Args:
    ray: the ``ray`` module.
    num_cpus: CPUs the instance offers.
    num_gpus: GPUs it offers (None: as many as Ray detects).
  """
  with _ray_single_machine_mode():
    ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
             dashboard_host='127.0.0.1', _node_ip_address='127.0.0.1')


def _ray_need(args: dict) -> dict:
  """Ray resource -> how much of it each run's task holds."""
  return {'CPU': args.get('num_cpus', 1), 'GPU': args.get('num_gpus', 0)}


def _largest_node(ray) -> dict:
  """Ray resource -> the most that one live node of the cluster has."""
  largest = {}
  for node in ray.nodes():
    if node.get('Alive', node.get('alive', False)):
      for name, amount in node.get('Resources', {}).items():
        largest[name] = max(largest.get(name, 0), amount)
  return largest


def _check_fits(need: dict, have: dict, where: str):
  """Refuses a task that no node can hold: Ray would wait for it forever."""
  for name, amount in need.items():
    if amount > have.get(name, 0):
      key = {'CPU': 'num_cpus', 'GPU': 'num_gpus'}[name]
      raise UserError(
          f'--launcher_args {key}={amount}: each run would hold {amount} '
          f'{name}(s), but {where} has {have.get(name, 0):g}; ask for at most '
          'that, or give --ray_address of a cluster with bigger nodes')


def check_local_ray_fits(args: dict) -> dict:
  """Refuses a task larger than this machine; returns its CPUs and GPUs.

  The sweep calls it before it writes anything when Ray is to start a local
  instance (no ``--ray_address``).
  """
  need = _ray_need(args)
  have = {'CPU': os.cpu_count() or 1, 'GPU': local_gpus()}
  known = [k for k, v in have.items() if v is not None]
  _check_fits({k: need[k] for k in known}, have, 'this machine')
  return have


def run_ray(runs, config_arg, extra, args: dict, address: str = '',
            echo=print, poll: float = 1.0) -> dict:
  """One Ray task per run not yet done, each holding its CPUs and GPUs.

  A task no node can hold is refused before any run starts (Ray would wait
  for it forever): for a local instance, against this machine's CPUs and
  GPUs before Ray starts; on a cluster (or an instance already running),
  against what its largest live node has once connected.
  """
  ray = _require('ray')
  need = _ray_need(args)
  if not ray.is_initialized():
    if address:
      try:
        ray.init(address=address)
      except ConnectionError as e:
        raise UserError(f'--ray_address={address}: cannot connect to a Ray '
                        f'cluster there: {first_line(e)}') from None
    else:
      have = check_local_ray_fits(args)
      start_local_ray(ray, have['CPU'], have['GPU'])
    started_here = True
  else:
    started_here = False
  where = (f'the largest node of the Ray cluster at {address}' if address else
           'the Ray instance this sweep runs on')
  try:
    _check_fits(need, _largest_node(ray), where)
  except UserError:
    if started_here:
      ray.shutdown()
    raise
  results, pending = _still_to_train(runs, echo)
  train = ray.remote(num_cpus=need['CPU'], num_gpus=need['GPU'])(
      jobs.train_process)
  refs = {}
  started = time.time()
  for run in pending:
    sweep.write_status(run, {'status': 'running', 'launcher': 'ray',
                             'overrides': run.overrides})
    echo(f'start {run.name}')
    refs[train.remote(run.command(config_arg, extra), run.workdir)] = run
  while refs:
    ready, _ = ray.wait(list(refs), num_returns=1, timeout=poll)
    for ref in ready:
      run = refs.pop(ref)
      code = ray.get(ref)
      results[run.name] = sweep.finish(run, code, time.time() - started,
                                       config_arg, extra, echo)
  return results
