"""Runs many entry points (``train.py``, ``sweep.py``, ...) at once, cheaply.

Each case runs as ``python <script> <args>`` would, with its own argv,
environment, stdout, stderr and exit status, but in a process forked from one
that imported the heavy libraries once (multiprocessing's fork server with a
preload). The bad-input tests start dozens of entry points; each fresh
interpreter would spend its seconds importing JAX, TensorFlow and the library.
"""
import multiprocessing
import os
import runpy
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Imported once by the fork server. Not the entry points' own modules
# (inception.cli.*): each defines absl flags, and two sets would collide.
# None of these starts a JAX backend or a thread, so forking stays safe.
PRELOAD = ('inception.cli.app', 'inception.sweeps.launchers',
           'inception.sweeps.report', 'inception.training.loop',
           'inception.data')


def _run(argv: list[str], env: dict, stdout: str, stderr: str):
  """The child: ``python <argv>`` in the repository root."""
  os.chdir(REPO)
  os.environ.clear()
  os.environ.update(env)
  sys.path.insert(0, REPO)
  for fd, path in ((1, stdout), (2, stderr)):
    f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(f, fd)
    os.close(f)
  # multiprocessing turns SystemExit into the exit status, as Python does.
  if argv[0] == '-m':  # python -m <module> <args>
    sys.argv = list(argv[1:])
    runpy.run_module(argv[1], run_name='__main__', alter_sys=True)
  else:
    sys.argv = list(argv)
    runpy.run_path(argv[0], run_name='__main__')


def run_together(cases: dict, timeout: float = 300) -> dict:
  """name -> (exit status, stdout, stderr) for each case.

  Args:
    cases: name -> (argv, env): what follows ``python`` (a script relative to
      the repository root, or ``-m`` and a module, then the arguments) and
      the complete environment it runs with.
    timeout: seconds for all of them.
  """
  context = multiprocessing.get_context('forkserver')
  context.set_forkserver_preload(list(PRELOAD))
  with tempfile.TemporaryDirectory() as tmp:
    procs = {}
    for i, (name, (argv, env)) in enumerate(cases.items()):
      paths = os.path.join(tmp, f'{i}.out'), os.path.join(tmp, f'{i}.err')
      proc = context.Process(target=_run, args=(argv, env, *paths))
      proc.start()
      procs[name] = proc, paths
    out = {}
    for name, (proc, paths) in procs.items():
      proc.join(timeout)
      if proc.is_alive():
        proc.kill()
        raise TimeoutError(f'{name}: still running after {timeout} s')
      texts = []
      for path in paths:
        with open(path, encoding='utf-8', errors='replace') as f:
          texts.append(f.read())
      out[name] = (proc.exitcode, *texts)
  return out
