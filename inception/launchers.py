"""Where a sweep's runs train: local processes, SLURM (submitit) or Ray.

Every launcher trains the same argument list per run (``Run.command``: ``python
-m inception.train_main ...``) and keeps the sweep's semantics: finished runs
are skipped, an interrupted run resumes from its checkpoint, a failed run is
recorded with its error in ``status.json`` while the others go on, and a
launcher killed and started again completes every run exactly once (a run
whose job is still training is waited for, not submitted twice).

* ``local``: one subprocess per run, ``parallel`` at a time
  (``inception.sweep.execute``).
* ``slurm``: submitit. Each run is a task of one job array; a run whose time
  limit or preemption signal arrives asks its training process to save
  (SIGTERM), then submitit requeues it and it resumes from the checkpoint.
  With ``nodes > 1`` each task is one JAX process and
  ``jax.distributed.initialize()`` reads SLURM's environment.
* ``ray``: one Ray task per run, holding the CPUs and GPUs it asks for, on
  ``ray_address`` or a local Ray instance.

submitit and Ray are optional (``requirements-cluster.txt``).
"""
import fcntl
import os
import signal
import subprocess
import sys
import time

from inception import sweep, workdir as workdir_lib
from inception.errors import UserError

LAUNCHERS = ('local', 'slurm', 'ray')
JOB_LOCK = '.job.lock'  # held by a run's job while it trains
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


def parse_args(launcher: str, items: list[str]) -> dict:
  """``['partition=gpu', 'time=60']`` -> typed values, checked against ``launcher``."""
  if launcher not in LAUNCHERS:
    raise UserError(f'--launcher={launcher!r}; use one of {", ".join(LAUNCHERS)}')
  allowed = {'slurm': tuple(SLURM_ARGS), 'ray': RAY_ARGS, 'local': ()}[launcher]
  out = {}
  for item in items:
    key, sep, value = item.partition('=')
    if not sep or key not in allowed:
      raise UserError(f'--launcher_args {item!r}: the {launcher} launcher takes'
                      f' key=value with keys {", ".join(allowed) or "(none)"}')
    try:
      out[key] = int(value)
    except ValueError:
      try:
        out[key] = float(value)
      except ValueError:
        out[key] = value
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
  return _held(workdir_lib.path(run.workdir, JOB_LOCK)) or _held(
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


def _exited(pid: int, timeout: float) -> bool:
  """Waits up to ``timeout`` s for child ``pid`` to exit, without reaping it.

  Runs inside submitit's signal handler, which interrupts ``Popen.wait`` in
  the same thread: that call holds the Popen's wait lock, so ``poll`` and
  ``wait`` here would see nothing until their timeout. ``WNOWAIT`` leaves
  the exit status for the interrupted ``wait`` to collect.
  """
  end = time.monotonic() + timeout
  while time.monotonic() < end:
    try:
      if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
        return True
    except ChildProcessError:
      return True
    time.sleep(0.05)
  return False


class TrainJob:
  """A submitit job: trains one run in a child process, requeued on timeout.

  The child is the same ``python -m inception.train_main`` command as the
  local launcher's; the job holds ``JOB_LOCK`` while it runs, so that a
  restarted launcher waits for it instead of submitting it again.
  """

  def __init__(self, argv: list[str], workdir: str):
    self.argv, self.workdir = list(argv), workdir
    self._proc = None

  def __call__(self) -> str:
    import submitit  # pylint: disable=g-import-not-at-top
    env = submitit.JobEnvironment()
    argv = list(self.argv)
    if env.num_tasks > 1:  # one JAX process per task; SLURM's env says who
      argv.append('--num_processes=-1')
    os.makedirs(self.workdir, exist_ok=True)
    lock = open(workdir_lib.path(self.workdir, JOB_LOCK), 'a', encoding='utf-8')
    if env.global_rank == 0:
      fcntl.flock(lock, fcntl.LOCK_EX)
    log = open(workdir_lib.path(self.workdir, workdir_lib.LOG), 'a',
               encoding='utf-8')
    self._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
    code = self._proc.wait()
    log.close()
    if code != 0:
      raise RuntimeError(sweep.tail(workdir_lib.path(self.workdir,
                                                     workdir_lib.LOG)))
    done = os.path.exists(workdir_lib.path(self.workdir, workdir_lib.SUMMARY))
    return 'done' if done else 'stopped'

  def checkpoint(self):
    """On a time limit or preemption: let the run save, then requeue it."""
    import submitit  # pylint: disable=g-import-not-at-top
    if self._proc is not None and self._proc.returncode is None:
      self._proc.send_signal(signal.SIGTERM)  # saves at the current step
      if not _exited(self._proc.pid, timeout=300):
        self._proc.kill()
    return submitit.helpers.DelayedSubmission(TrainJob(self.argv,
                                                       self.workdir))


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
  if 'mem_gb' in params:
    params['mem'] = f'{params.pop("mem_gb")}GB'
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
  jobs = []
  with executor.batch():
    for run in pending:
      jobs.append((run, executor.submit(TrainJob(
          run.command(config_arg, extra), run.workdir))))
  started = time.time()
  for run, job in jobs:
    sweep.write_status(run, {'status': 'running', 'launcher': 'slurm',
                             'job_id': job.job_id, 'overrides': run.overrides})
    echo(f'submitted {run.name} (job {job.job_id})')
  for run, job in jobs:
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


def run_ray(runs, config_arg, extra, args: dict, address: str = '',
            echo=print, poll: float = 1.0) -> dict:
  """One Ray task per run not yet done, each holding its CPUs and GPUs."""
  ray = _require('ray')
  if not ray.is_initialized():
    if address:
      ray.init(address=address)
    else:
      ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
  results, pending = _still_to_train(runs, echo)
  train = ray.remote(num_cpus=args.get('num_cpus', 1),
                     num_gpus=args.get('num_gpus', 0))(_train_process)
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


def _train_process(argv: list[str], workdir: str) -> int:
  """A Ray task: the run's training process, holding the job lock."""
  os.makedirs(workdir, exist_ok=True)
  with open(workdir_lib.path(workdir, JOB_LOCK), 'a', encoding='utf-8') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    with open(workdir_lib.path(workdir, workdir_lib.LOG), 'a',
              encoding='utf-8') as log:
      return subprocess.call(argv, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
