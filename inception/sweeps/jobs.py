"""What runs inside a cluster job: one run's training process, and its lock.

submitit and Ray unpickle these in every job's own Python process, so this
module imports no JAX, no model and no planner: the job only starts the same
``python -m inception.cli.train`` command as the local launcher and holds
``JOB_LOCK`` while it runs, so that a restarted launcher waits for it instead
of submitting it again (``launchers.busy``).
"""
import fcntl
import os
import signal
import subprocess
import time

from inception.training import workdir as workdir_lib

JOB_LOCK = '.job.lock'  # held by a run's job while it trains


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

  The child is the same ``python -m inception.cli.train`` command as the
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
      raise RuntimeError(workdir_lib.tail(workdir_lib.path(
          self.workdir, workdir_lib.LOG)))
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


def train_process(argv: list[str], workdir: str) -> int:
  """A Ray task: the run's training process, holding the job lock."""
  os.makedirs(workdir, exist_ok=True)
  with open(workdir_lib.path(workdir, JOB_LOCK), 'a', encoding='utf-8') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    with open(workdir_lib.path(workdir, workdir_lib.LOG), 'a',
              encoding='utf-8') as log:
      return subprocess.call(argv, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
