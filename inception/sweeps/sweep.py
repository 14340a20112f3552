"""Sweeps: lists of config overrides, run one process each, resumably.

A sweep file defines ``get_sweep(config) -> list[dict]``: one dict of
``--config.*`` overrides per run, built with ``axis``, ``product``, ``zip``
and ``chain``. ``config`` is the resolved base config, so a sweep can derive
values from it (``configs/sweeps/equal_macs.py`` sizes a width from the FLOP
accounting).

Each run is ``python -m inception.cli.train`` in its own process and
sub-workdir, started with an argument list (never a shell string). The runner is resumable:
finished runs are skipped, interrupted ones resume from their checkpoints,
and a failed run is recorded without stopping the others. Run processes die
with the runner (Linux), and a workdir lock keeps two processes from ever
training the same run. A rerun must resolve to the same config as the runs
it would skip (``check_rerun``). Ctrl-C stops every running run with a
checkpoint (``Interrupt``).
"""
import builtins
import ctypes
import dataclasses
import hashlib
import importlib.util
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Iterable

import ml_collections
from absl import flags
from ml_collections import config_flags

from inception.models import budget
from inception.sweeps import cost as sweep_cost
from inception.training import identity, specs
from inception.training import workdir as workdir_lib
from inception.errors import UserError, first_line

TRAIN_MODULE = 'inception.cli.train'  # ``python -m``: no path to a script
_MAX_NAME = 200  # characters of a run directory's name
_FIELD = re.compile(r'[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*')
_SCALARS = (bool, int, float, str, type(None))


def axis(name: str, values: Iterable) -> list[dict]:
  """One override per value: ``axis('seed', [0, 1])``."""
  return [{name: v} for v in values]


def product(*axes: list[dict]) -> list[dict]:
  """Every combination of the axes (the first varies slowest)."""
  return [dict(itertools.chain.from_iterable(d.items() for d in combo))
          for combo in itertools.product(*axes)]


def zip(*axes: list[dict]) -> list[dict]:  # pylint: disable=redefined-builtin
  """Axes of equal length, merged element by element."""
  lengths = {len(a) for a in axes}
  if len(lengths) > 1:
    raise ValueError(f'zip needs axes of equal length, got {sorted(lengths)}')
  return [dict(itertools.chain.from_iterable(d.items() for d in ds))
          for ds in builtins.zip(*axes)]


def chain(*axes: list[dict]) -> list[dict]:
  """Runs of one list, then of the next."""
  return [d for a in axes for d in a]


@dataclasses.dataclass
class Run:
  """One run of a sweep."""
  name: str
  overrides: dict
  workdir: str

  def override_flags(self) -> list[str]:
    """This run's own overrides as ``--config.field=value`` flags."""
    return [f'--config.{k}={_flag_value(v)}' for k, v in self.overrides.items()]

  def command(self, config_arg: str, extra: list[str]) -> list[str]:
    """The argument list that trains this run (``extra``: shared overrides)."""
    return [sys.executable, '-m', TRAIN_MODULE, '--config', config_arg,
            '--workdir', self.workdir, *extra, *self.override_flags()]

  def status(self) -> dict:
    """The run's status.json ({} when absent or not a JSON object)."""
    try:
      status = workdir_lib.read_json(workdir_lib.path(self.workdir,
                                                      workdir_lib.RUN_STATUS))
    except UserError:
      return {}
    return status if isinstance(status, dict) else {}

  def done(self) -> bool:
    return os.path.exists(workdir_lib.path(
        self.workdir, workdir_lib.SUMMARY)) and self.status().get(
            'status') == 'done'


def _flag_value(v) -> str:
  if isinstance(v, (list, tuple)):
    return '(' + ','.join(_flag_value(x) for x in v) + ')'
  return str(v)


def _digest(overrides: dict, length: int) -> str:
  """A hash of the exact overrides (their order aside)."""
  return hashlib.sha1(json.dumps(overrides, sort_keys=True, default=str)
                      .encode()).hexdigest()[:length]


def run_name(overrides: dict, unique: bool = False) -> str:
  """A directory name from the overrides, e.g. ``bottleneck=False,seed=1``.

  Characters other than ``A-Za-z0-9=,._+-`` become ``_``. A name that lost
  non-ASCII characters that way (``é`` and ``ü`` would both be ``_``), or
  that ``unique`` asks to disambiguate (``plan`` does for names two override
  sets share), ends in a short hash of the exact overrides; every other name
  is kept as it always was, so the runs of earlier sweeps are found again.
  """
  raw = ','.join(f'{k.split(".")[-1]}={_flag_value(v)}'
                 for k, v in overrides.items()) or 'base'
  name = re.sub(r'[^A-Za-z0-9=,._+-]', '_', raw)
  if unique or not raw.isascii():
    name = f'{name}-{_digest(overrides, 8)}'
  if len(name) > _MAX_NAME:  # file systems allow 255 bytes: keep it unique
    name = f'{name[:_MAX_NAME - 13]}-{_digest(overrides, 12)}'
  return name


def load_sweep(path: str, config: ml_collections.ConfigDict) -> list[dict]:
  """Runs ``get_sweep(config)`` of the sweep file; UserError on any fault.

  ``get_sweep`` may return any iterable of dicts (a list, a generator).
  """
  if not os.path.isfile(path):
    raise UserError(f'sweep file {path} does not exist')
  spec = importlib.util.spec_from_file_location('_sweep_file', path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except SyntaxError as e:
    raise UserError(f'sweep file {path} has a syntax error at line {e.lineno}:'
                    f' {e.msg}') from None
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f'sweep file {path} failed to import: '
                    f'{type(e).__name__}: {first_line(e)}') from None
  if not callable(getattr(module, 'get_sweep', None)):
    raise UserError(f'sweep file {path} defines no get_sweep(config)')
  try:
    runs = module.get_sweep(config)
    runs = list(runs) if isinstance(runs, Iterable) and not isinstance(
        runs, (dict, str)) else runs
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f'get_sweep in {path} raised {type(e).__name__}: '
                    f'{first_line(e)}') from None
  if (not isinstance(runs, list) or not runs
      or not all(isinstance(r, dict) for r in runs)):
    raise UserError(f'get_sweep in {path} must return a non-empty list of '
                    'dicts of overrides')
  for overrides in runs:
    for key, value in overrides.items():
      _check_override(config, key, value, path)
  return runs


def _uncarried(value):
  """What in ``value`` a ``--config.field=value`` flag cannot carry, or None."""
  if isinstance(value, (tuple, list)):
    return next((bad for bad in map(_uncarried, value) if bad is not None),
                None)
  return None if isinstance(value, _SCALARS) else value


def _check_override(config, key, value, path: str):
  """The field must exist and take the value's type (as --config.* would)."""
  if not isinstance(key, str) or not _FIELD.fullmatch(key):
    raise UserError(f'sweep file {path}: override key {key!r} is not a config '
                    'field name (a string such as "model.width")')
  bad = _uncarried(value)
  if bad is not None:
    raise UserError(f'sweep file {path}: {key}={value!r:.100} holds a '
                    f'{type(bad).__name__}, which a --config.* flag cannot '
                    'carry (use bool, int, float, str, or a tuple of them)')
  node = config
  parts = key.split('.')
  for part in parts[:-1]:
    if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
      raise UserError(f'sweep file {path}: config has no field {key!r}')
    node = node[part]
  if parts[-1] not in node:
    raise UserError(f'sweep file {path}: config has no field {key!r}')
  current = node[parts[-1]]
  if isinstance(current, ml_collections.ConfigDict):
    example = f'{key}.{next(iter(current), "x")}'
    raise UserError(f'sweep file {path}: {key!r} is a group of fields; '
                    f'override its fields (e.g. {example})')
  ok = (type(current) is type(value) or
        (isinstance(current, float) and isinstance(value, int)
         and not isinstance(value, bool)))
  if current is not None and not ok:
    raise UserError(f'sweep file {path}: {key}={value!r} is a '
                    f'{type(value).__name__} but the field is a '
                    f'{type(current).__name__}')


def _recorded_overrides(run_dir: str):
  """The overrides an existing run directory was started with, or None."""
  try:
    status = workdir_lib.read_json(workdir_lib.path(run_dir,
                                                    workdir_lib.RUN_STATUS))
  except UserError:
    return None
  return status.get('overrides') if isinstance(status, dict) else None


def plan(workdir: str, runs: list[dict]) -> list[Run]:
  """Names the runs: one directory per distinct set of overrides.

  Two different override sets never share a directory: where their names
  coincide (``a.x`` and ``b.x`` both give ``x=...``; ``a:b`` and ``a/b``
  both give ``a_b``), or where a directory of that name already holds a run
  of other overrides, the name gains a hash of the overrides. A run whose
  directory records exactly its overrides keeps its name.

  Raises:
    UserError: the same overrides are listed twice.
  """
  keys = [_digest(o, 40) for o in runs]
  if len(set(keys)) != len(keys):
    dup = sorted({run_name(o) for o, k in builtins.zip(runs, keys)
                  if keys.count(k) > 1})
    raise UserError(f'the sweep has duplicate runs: {", ".join(dup)}')
  names = [run_name(o) for o in runs]
  named = []
  for overrides, name in builtins.zip(runs, names):
    recorded = _recorded_overrides(os.path.join(workdir, name))
    owns = recorded is not None and _digest(recorded, 40) == _digest(
        overrides, 40)
    taken = recorded is not None and not owns
    if (names.count(name) > 1 and not owns) or taken:
      name = run_name(overrides, unique=True)
    named.append(Run(name, overrides, os.path.join(workdir, name)))
  return named


def _die_with_parent():
  """Child: receive SIGTERM when the runner dies, even from kill -9."""
  try:
    ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
  except OSError:
    pass  # not Linux: children outlive a killed runner


def write_status(run: Run, status: dict):
  """Writes the run's ``status.json`` (atomically)."""
  os.makedirs(run.workdir, exist_ok=True)
  workdir_lib.write_json(workdir_lib.path(run.workdir, workdir_lib.RUN_STATUS),
                         status)


def split_done(runs: list[Run], echo=print) -> tuple[dict[str, str], list[Run]]:
  """({name: 'skipped'} for finished runs, the runs still to train)."""
  skipped = {r.name: 'skipped' for r in runs if r.done()}
  if skipped:
    echo(f'{len(skipped)} run(s) already done, skipped')
  return skipped, [r for r in runs if r.name not in skipped]


def _signal_name(number: int) -> str:
  try:
    return signal.Signals(number).name
  except ValueError:
    return f'signal {number}'


def finish(run: Run, returncode: int, seconds: float, config_arg: str,
           extra: list[str], echo=print, error: str | None = None,
           interrupted: bool = False) -> str:
  """Records a run's end in ``status.json``: 'done', 'stopped' or 'failed'.

  A worker killed by a signal is recorded as such ('killed by SIGKILL'), not
  by the last lines of its log (a progress bar, cut mid-line). With
  ``interrupted`` (the runner forwarded a Ctrl-C), a worker that exited on
  it without a summary is 'stopped': it resumes from its checkpoint.
  """
  done = os.path.exists(workdir_lib.path(run.workdir, workdir_lib.SUMMARY))
  # Exit 0 without a summary: stopped by SIGTERM/Ctrl-C with a checkpoint
  # (preemption); the next launch resumes it. After a forwarded Ctrl-C, a
  # worker still starting up exits 130 or dies of the SIGINT: it resumes too.
  clean = error is None and (returncode == 0 or (
      interrupted and returncode in (130, -signal.SIGINT)))
  state = ('done' if done else 'stopped') if clean else 'failed'
  status = {'status': state, 'returncode': returncode,
            'seconds': round(seconds, 1), 'overrides': run.overrides,
            'command': run.command(config_arg, extra)}
  if state == 'failed':
    if error is None and returncode is not None and returncode < 0:
      error = f'killed by {_signal_name(-returncode)}'
    status['error'] = error or workdir_lib.tail(workdir_lib.path(
        run.workdir, workdir_lib.LOG))
  try:
    write_status(run, status)
  except OSError as e:  # the sweep goes on; the rerun retrains the run
    echo(f'cannot record {run.name} in its {workdir_lib.RUN_STATUS} '
         f'({e.strerror or e})')
  echo(f'{state} {run.name} ({status["seconds"]} s)' +
       (f': {status["error"]}' if state == 'failed' else ''))
  return status['status']


class Interrupt:
  """Ctrl-C in the runner: the first stops the sweep cleanly, a second aborts.

  Workers run in sessions of their own, so a terminal's Ctrl-C reaches the
  runner only and each worker gets exactly one SIGINT, forwarded: it saves a
  checkpoint and exits 0 (``inception.training.loop``). No new run starts, the
  runner waits for the running ones and records them 'stopped' (they
  resume), and ``requested`` tells the caller to report what finished. A
  second SIGINT forwards another (the workers abort, keeping their last
  checkpoint), records them 'stopped' and exits 130 at once.
  """

  def __init__(self):
    self.requested = False
    self.active = {}  # run name -> (run, process)
    self._signalled = set()  # pids that got the first SIGINT
    self._previous = None

  def install(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGINT, self._handle)

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGINT, self._previous)
      self._previous = None

  def forward(self):
    """Sends the first SIGINT to every running worker not sent one yet."""
    for _, proc in list(self.active.values()):
      if proc.pid not in self._signalled:
        self._signalled.add(proc.pid)
        _kill(proc, signal.SIGINT)

  def _handle(self, signum, frame):
    del signum, frame
    if not self.requested:
      self.requested = True
      os.write(2, b'interrupted: stopping the running runs (each saves a '
               b'checkpoint); Ctrl-C again aborts at once\n')
      self.forward()
      return
    for run, proc in list(self.active.values()):
      _kill(proc, signal.SIGINT)
      try:
        write_status(run, {'status': 'stopped', 'returncode': None,
                           'overrides': run.overrides,
                           'error': 'aborted by a second Ctrl-C'})
      except OSError:
        pass
    sys.stdout.flush()
    os.write(2, b'error: interrupted twice; aborted (each run keeps its last '
             b'saved checkpoint; rerun the same command to continue)\n')
    os._exit(130)  # pylint: disable=protected-access


def _kill(proc: subprocess.Popen, sig: int):
  try:
    proc.send_signal(sig)
  except OSError:
    pass  # already gone


# The variables by which a JAX process sizes its accelerator memory pool.
GPU_MEMORY_VARS = ('XLA_CLIENT_MEM_FRACTION', 'XLA_PYTHON_CLIENT_MEM_FRACTION',
                   'XLA_PYTHON_CLIENT_PREALLOCATE', 'XLA_PYTHON_CLIENT_ALLOCATOR')


# XLA's flag that runs each CPU op on the calling thread only.
SINGLE_THREAD_XLA_FLAG = '--xla_cpu_multi_thread_eigen=false'


def _cores() -> int:
  """The CPU cores this process may run on."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


def worker_env(parallel: int, environ=None, cores: int | None = None
               ) -> dict | None:
  """The workers' environment when ``parallel`` of them share one machine.

  Memory: a JAX process takes 75% of each GPU's memory up front, so the
  second run on a GPU would run out of it. Each worker gets
  ``XLA_CLIENT_MEM_FRACTION = 0.9 / parallel`` (at most 0.75) instead,
  unless the user set any of ``GPU_MEMORY_VARS``; the CPU ignores it.

  Threads: N workers that each spread every op over all the cores wait at
  each op's barrier for threads the other workers hold
  (benchmarks/README.md, "Shared cores"). Each gets ``OMP_NUM_THREADS =
  cores // parallel`` unless it is set and, where that is one thread, XLA's
  CPU ops run single-threaded (``SINGLE_THREAD_XLA_FLAG``) unless
  ``XLA_FLAGS`` already sets it. The oneDNN convolutions do not read
  ``OMP_NUM_THREADS``: their team is the process's cores, so that their
  results do not depend on the launcher (``onednn/csrc/onednn_common.h``).
  On a GPU or TPU this touches only host-side work.

  Returns:
    the environment, or None (inherit it unchanged) for one worker.
  """
  environ = os.environ if environ is None else environ
  if parallel <= 1:
    return None
  env = dict(environ)
  if not any(v in environ for v in GPU_MEMORY_VARS):
    env['XLA_CLIENT_MEM_FRACTION'] = f'{min(0.75, 0.9 / parallel):.3f}'
  threads = max(1, (cores or _cores()) // parallel)
  env.setdefault('OMP_NUM_THREADS', str(threads))
  flags = environ.get('XLA_FLAGS', '')
  if threads == 1 and 'xla_cpu_multi_thread_eigen' not in flags:
    env['XLA_FLAGS'] = f'{flags} {SINGLE_THREAD_XLA_FLAG}'.strip()
  return env


def _start(run: Run, config_arg: str, extra: list[str], env=None):
  """Starts a run's worker: (process, log file); ``env``: see worker_env."""
  os.makedirs(run.workdir, exist_ok=True)
  log = open(workdir_lib.path(run.workdir, workdir_lib.LOG), 'a',
             encoding='utf-8')
  try:
    cmd = run.command(config_arg, extra)
    status = {'status': 'running', 'launcher': 'local', 'command': cmd,
              'overrides': run.overrides}
    write_status(run, status)
    # A session of its own: a terminal's Ctrl-C reaches the runner only,
    # which forwards it once (``Interrupt``).
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL,
                            preexec_fn=_die_with_parent,
                            start_new_session=True, env=env)
  except BaseException:
    log.close()
    raise
  try:
    write_status(run, {**status, 'pid': proc.pid})
  except OSError:
    pass  # the status written above stands
  return proc, log


def _train_logged(path: str, offset: int) -> bool:
  """Whether ``path`` (metrics.jsonl) has a train record past ``offset``."""
  try:
    with open(path, 'rb') as f:
      f.seek(offset)
      return b'"train/loss"' in f.read()
  except OSError:
    return False


def _size(path: str) -> int:
  try:
    return os.path.getsize(path)
  except OSError:
    return 0


class _WarmUp:
  """Starts one run per compiled program first; the rest once it compiled.

  Runs that share a ``program`` key (everything but the seed) compile the
  same step, which JAX's persistent cache then serves. Started together,
  each would compile it again; so a second run of a key waits until the
  first has logged a train step (its program is then in the cache) or has
  ended. Runs of other keys start meanwhile.
  """

  def __init__(self, program, echo):
    self.program, self.echo = program, echo
    self.warm, self.compiling = set(), {}  # key -> (run, metrics, offset)

  def pick(self, queue: list[Run]) -> Run | None:
    """Pops the first run free to start now (None: all wait)."""
    for i, run in enumerate(queue):
      key = self.program(run)
      if key in self.warm:
        return queue.pop(i)
      if key not in self.compiling:
        metrics = workdir_lib.path(run.workdir, workdir_lib.METRICS)
        self.compiling[key] = (run, metrics, _size(metrics))
        return queue.pop(i)
    return None

  def poll(self, active: dict):
    """Marks keys warm whose first run logged a step or is no longer active."""
    for key, (run, metrics, offset) in list(self.compiling.items()):
      if run.name not in active or _train_logged(metrics, offset):
        del self.compiling[key]
        self.warm.add(key)
        if run.name in active:
          self.echo(f'compiled {run.name}: its program is cached for the '
                    'runs that share it')


def program_key(config: ml_collections.ConfigDict):
  """run -> the key of the train step it compiles: its config but the seed
  and the fields that change no result (``identity.MUTABLE``)."""
  def key(run: Run) -> str:
    cfg = sweep_cost.with_overrides(config, run.overrides).to_dict()
    for field in ('seed', *identity.MUTABLE):
      cfg.pop(field, None)
    return json.dumps(cfg, sort_keys=True, default=str)
  return key


def execute(runs: list[Run], config_arg: str, extra: list[str],
            parallel: int = 1, echo=print,
            interrupt: Interrupt | None = None,
            program=None) -> dict[str, str]:
  """Trains every run not yet done, ``parallel`` at a time, as local processes.

  A run whose directory cannot be written is recorded failed; the others go
  on. Ctrl-C: see ``Interrupt`` (``interrupt.requested`` then says so; the
  runs never started are left out of the result). With ``program`` (run ->
  the key of the program it compiles) and ``parallel > 1``, runs sharing a
  program start after the first of them has compiled it (``_WarmUp``).
  Parallel workers share each GPU's memory and the CPU's cores
  (``worker_env``).

  Returns:
    run name -> final status ('done', 'failed', 'stopped', 'skipped' if
    already done).
  """
  interrupt = interrupt or Interrupt()
  results, queue = split_done(runs, echo)
  active, logs = interrupt.active, {}
  warm_up = _WarmUp(program, echo) if program and parallel > 1 else None
  env = worker_env(parallel)
  interrupt.install()
  try:
    while queue or active:
      if warm_up:
        warm_up.poll(active)
      while queue and len(active) < parallel and not interrupt.requested:
        run = warm_up.pick(queue) if warm_up else queue.pop(0)
        if run is None:
          break
        echo(f'start {run.name}')
        try:
          proc, log = _start(run, config_arg, extra, env)
        except OSError as e:
          results[run.name] = 'failed'
          echo(f'failed {run.name}: cannot start it in {run.workdir} '
               f'({e.strerror or e})')
          continue
        active[run.name] = (run, proc)
        logs[run.name] = (log, time.time())
      if interrupt.requested:
        interrupt.forward()
        if not active:
          break
      time.sleep(0.2)
      for name, (run, proc) in list(active.items()):
        if proc.poll() is None:
          continue
        log, start = logs.pop(name)
        log.close()
        del active[name]
        results[name] = finish(run, proc.returncode, time.time() - start,
                               config_arg, extra, echo,
                               interrupted=interrupt.requested)
  finally:
    interrupt.restore()
  return results


def resolve_config(config_arg: str, overrides: list[str]):
  """The config ``--config CONFIG_ARG OVERRIDES...`` gives, parsed as absl does.

  A run's worker resolves its config from the same arguments, so this is
  the config it trains.

  Raises:
    UserError: the config file cannot be loaded or an override is refused.
  """
  argv = ['sweep', f'--config={config_arg}', *overrides]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', flag_values=values,
                                  lock_config=True, sys_argv=argv)
  try:
    values(argv)
    return values.config.copy_and_resolve_references()
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f'cannot resolve the config {config_arg} with '
                    f'{overrides}: {first_line(e)}') from None


def _field_of(override: str) -> str:
  """``model.width`` of ``--config.model.width=0.5``."""
  return override.split('=', 1)[0].split('.', 1)[1]


def _trained(run_dir: str) -> bool:
  """Whether a run directory holds a summary or a committed checkpoint."""
  checkpoints = workdir_lib.path(run_dir, workdir_lib.CHECKPOINTS)
  return os.path.exists(workdir_lib.path(run_dir, workdir_lib.SUMMARY)) or (
      os.path.isdir(checkpoints) and any(n.isdigit()
                                         for n in os.listdir(checkpoints)))


def _result_changes(saved: dict, requested: dict) -> dict[str, tuple]:
  """(saved, requested) per field that changes the result (as on a resume)."""
  return {k: v for k, v in identity.differences(saved, requested).items()
          if k not in identity.MUTABLE}


def _read_manifest(workdir: str) -> dict:
  path = workdir_lib.path(workdir, workdir_lib.MANIFEST)
  manifest = workdir_lib.read_json(path)
  if not isinstance(manifest, dict):
    raise UserError(f'{path} holds {type(manifest).__name__}, not a sweep '
                    'manifest; restore or remove it')
  return manifest


def check_rerun(workdir: str, config_arg: str, extra: list[str],
                runs: list[Run], config=None) -> dict | None:
  """Refuses a rerun whose runs would get another config than the sweep's.

  The finished runs of a sweep are skipped on a rerun; if the rerun's
  config differed they would stand under a label they never had. What is
  compared is the config a run gets (config file, its ``:arg``, the shared
  overrides, resolved) on the fields that change the result (those a
  resume may not change, ``inception.training.identity``), never the command's
  spelling or the repository's path (a fresh clone lives elsewhere):

  * every planned run that has trained (a summary or a checkpoint) against
    its own ``config.json``;
  * the manifest's resolved base config (``resolved``); a manifest written
    before it was recorded says only its spelling, and its config file's
    defaults may have changed since, so there the fields its shared
    overrides set are compared.

  Where the config cannot be resolved here, the spelling is compared.

  Args:
    config: the resolved base config, if already parsed (else resolved from
      ``config_arg`` and ``extra``).

  Returns:
    The resolved base config as saved (for the manifest), or None.

  Raises:
    UserError: a field that changes the result differs; it names the field.
  """
  old = _read_manifest(workdir) if os.path.isdir(workdir) else {}
  try:
    base = config if config is not None else resolve_config(config_arg, extra)
  except UserError:
    base = None
  changes = {}
  if base is None:
    if old:  # the spelling: the config file's name, its arg, the overrides
      same = lambda arg: os.path.basename(arg.partition(':')[0]) + ':' + (
          arg.partition(':')[2])
      if same(old.get('config', '')) != same(config_arg):
        changes['config'] = f'config: {old.get("config")!r} -> {config_arg!r}'
      if old.get('overrides', []) != extra:
        changes['overrides'] = (f'shared overrides: {old.get("overrides")} -> '
                                f'{extra}')
    _refuse(workdir, changes)
    return None
  requested = specs.saved_config(base)
  if isinstance(old.get('resolved'), dict):
    for k, (a, b) in _result_changes(old['resolved'], requested).items():
      changes[k] = f'{k}: {a!r} -> {b!r}'
  elif old:
    spelled = old.get('overrides')
    for override in spelled if isinstance(spelled, list) else []:
      if not (isinstance(override, str) and override.startswith('--config.')):
        continue
      try:  # its value, read as this config's field reads it
        value = specs.saved_config(resolve_config(config_arg, [override]))
      except UserError:
        continue  # a field the config no longer has, or a torn override
      field = _field_of(override)
      flat_old, flat_new = identity.flatten(value), identity.flatten(requested)
      if (field in flat_old and field in flat_new and field not in
          identity.MUTABLE and flat_old[field] != flat_new[field]):
        changes[field] = f'{field}: {flat_old[field]!r} -> {flat_new[field]!r}'
  differing = []  # the trained runs of another config
  for run in runs:
    path = workdir_lib.path(run.workdir, workdir_lib.CONFIG)
    if not (os.path.exists(path) and _trained(run.workdir)):
      continue
    run_config = resolve_config(config_arg, extra + run.override_flags())
    diff = _result_changes(workdir_lib.read_config(path),
                           specs.saved_config(run_config))
    for k, (a, b) in diff.items():
      changes.setdefault(k, f'{k}: {a!r} -> {b!r}')
    if diff:
      differing.append(run.name)
  where = (f' in {len(differing)} trained run(s), e.g. {differing[0]}'
           if differing else '')
  _refuse(workdir, changes, where)
  return requested


def _refuse(workdir: str, changes: dict, where: str = ''):
  if changes:
    raise UserError(
        f'{workdir} holds a sweep with other settings '
        f'({"; ".join(changes.values())}{where}); its runs would be '
        'mislabelled: use a new --workdir, or rerun with the same settings')


def write_manifest(workdir: str, config_arg: str, sweep_path: str,
                   extra: list[str], runs: list[Run], config=None):
  """Records what the sweep is, for the report and for resuming.

  A rerun must be the same sweep (``check_rerun``, which it calls first).
  The manifest records the command's config and shared overrides as spelled
  and, where it resolves here, the resolved base config (``resolved``) that
  the next rerun is compared with. Runs the manifest already lists are
  kept; new ones are added.
  """
  resolved = check_rerun(workdir, config_arg, extra, runs, config)
  os.makedirs(workdir, exist_ok=True)
  old = _read_manifest(workdir)
  entries = [{'name': r.name, 'overrides': r.overrides} for r in runs]
  listed = old.get('runs') if isinstance(old.get('runs'), list) else []
  if listed:
    known = {e.get('name') for e in listed if isinstance(e, dict)}
    entries = listed + [e for e in entries if e['name'] not in known]
  manifest = {'config': config_arg, 'sweep': sweep_path, 'overrides': extra,
              'runs': entries}
  if resolved is not None:
    manifest['resolved'] = resolved
  workdir_lib.write_json(workdir_lib.path(workdir, workdir_lib.MANIFEST),
                         manifest)


def describe_arms(config, runs: list[Run]) -> list[str]:
  """One line per arm (overrides but the seed): branch widths, MACs vs the first.

  Shows what each arm is before any training: a degenerate arm (a branch of
  one or two channels) or an equal-MACs arm off its target is visible here.
  """
  lines, target, seen = [], None, set()
  for run in runs:
    arm = {k: v for k, v in run.overrides.items() if k != 'seed'}
    key = json.dumps(arm, sort_keys=True, default=str)
    if key in seen:
      continue
    seen.add(key)
    try:
      model = specs.model_spec(sweep_cost.with_overrides(config, arm))
      shape = budget.describe(model.name, model.input_shape, **model.kwargs)
    except (ValueError, TypeError, UserError) as e:
      lines.append(f'{run_name(arm)}: cannot describe ({e})')
      continue
    target = target or shape.macs
    lines.append(f'{run_name(arm)}: {budget.format_shape(shape, target)}')
  return lines
