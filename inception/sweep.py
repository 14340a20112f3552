"""Sweeps: lists of config overrides, run one process each, resumably.

A sweep file defines ``get_sweep(config) -> list[dict]``: one dict of
``--config.*`` overrides per run, built with ``axis``, ``product``, ``zip``
and ``chain``. ``config`` is the resolved base config, so a sweep can derive
values from it (``configs/sweeps/equal_macs.py`` sizes a width from the FLOP
accounting).

Each run is ``python -m inception.train_main`` in its own process and
sub-workdir, started with an argument list (never a shell string). The runner is resumable:
finished runs are skipped, interrupted ones resume from their checkpoints,
and a failed run is recorded without stopping the others. Run processes die
with the runner (Linux), and a workdir lock keeps two processes from ever
training the same run.
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
import time
from typing import Iterable

import ml_collections

from inception import budget, specs, workdir as workdir_lib
from inception.errors import UserError, first_line

TRAIN_MODULE = 'inception.train_main'  # ``python -m``: no path to a script
_MAX_NAME = 200  # characters of a run directory's name


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

  def command(self, config_arg: str, extra: list[str]) -> list[str]:
    """The argument list that trains this run (``extra``: shared overrides)."""
    return [sys.executable, '-m', TRAIN_MODULE, '--config', config_arg,
            '--workdir', self.workdir, *extra,
            *(f'--config.{k}={_flag_value(v)}' for k, v in
              self.overrides.items())]

  def status(self) -> dict:
    return workdir_lib.read_json(workdir_lib.path(self.workdir,
                                                  workdir_lib.RUN_STATUS))

  def done(self) -> bool:
    return os.path.exists(workdir_lib.path(
        self.workdir, workdir_lib.SUMMARY)) and self.status().get(
            'status') == 'done'


def _flag_value(v) -> str:
  if isinstance(v, (list, tuple)):
    return '(' + ','.join(_flag_value(x) for x in v) + ')'
  return str(v)


def run_name(overrides: dict) -> str:
  """A directory name from the overrides, e.g. ``bottleneck=False,seed=1``."""
  parts = [f'{k.split(".")[-1]}={_flag_value(v)}' for k, v in overrides.items()]
  name = re.sub(r'[^A-Za-z0-9=,._+-]', '_', ','.join(parts) or 'base')
  if len(name) > _MAX_NAME:  # file systems allow 255 bytes: keep it unique
    digest = hashlib.sha1(json.dumps(overrides, sort_keys=True, default=str)
                          .encode()).hexdigest()[:12]
    name = f'{name[:_MAX_NAME - 13]}-{digest}'
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


def _check_override(config, key: str, value, path: str):
  """The field must exist and take the value's type (as --config.* would)."""
  node = config
  parts = key.split('.')
  for part in parts[:-1]:
    if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
      raise UserError(f'sweep file {path}: config has no field {key!r}')
    node = node[part]
  if parts[-1] not in node:
    raise UserError(f'sweep file {path}: config has no field {key!r}')
  current = node[parts[-1]]
  ok = (type(current) is type(value) or
        (isinstance(current, float) and isinstance(value, int)
         and not isinstance(value, bool)))
  if current is not None and not ok:
    raise UserError(f'sweep file {path}: {key}={value!r} is a '
                    f'{type(value).__name__} but the field is a '
                    f'{type(current).__name__}')


def plan(workdir: str, runs: list[dict]) -> list[Run]:
  """Names the runs and checks that the names are distinct."""
  named = [Run(run_name(o), o, os.path.join(workdir, run_name(o)))
           for o in runs]
  names = [r.name for r in named]
  if len(set(names)) != len(names):
    dup = sorted({n for n in names if names.count(n) > 1})
    raise UserError(f'the sweep has duplicate runs: {", ".join(dup)}')
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


def tail(path: str, lines: int = 5) -> str:
  """A log's last ``error:`` line, else its last ``lines`` lines."""
  try:
    with open(path, encoding='utf-8', errors='replace') as f:
      text = f.read().strip().splitlines()
  except OSError:
    return ''
  errors = [l for l in text if l.startswith('error:')]
  return errors[-1] if errors else '\n'.join(text[-lines:])


def split_done(runs: list[Run], echo=print) -> tuple[dict[str, str], list[Run]]:
  """({name: 'skipped'} for finished runs, the runs still to train)."""
  skipped = {r.name: 'skipped' for r in runs if r.done()}
  if skipped:
    echo(f'{len(skipped)} run(s) already done, skipped')
  return skipped, [r for r in runs if r.name not in skipped]


def finish(run: Run, returncode: int, seconds: float, config_arg: str,
           extra: list[str], echo=print, error: str | None = None) -> str:
  """Records a run's end in ``status.json``: 'done', 'stopped' or 'failed'."""
  done = os.path.exists(workdir_lib.path(run.workdir, workdir_lib.SUMMARY))
  if returncode == 0 and error is None:
    # Exit 0 without a summary: stopped by SIGTERM/Ctrl-C with a checkpoint
    # (preemption); the next launch resumes it.
    state = 'done' if done else 'stopped'
  else:
    state = 'failed'
  status = {'status': state, 'returncode': returncode,
            'seconds': round(seconds, 1), 'overrides': run.overrides,
            'command': run.command(config_arg, extra)}
  if state == 'failed':
    status['error'] = error or tail(workdir_lib.path(run.workdir,
                                                     workdir_lib.LOG))
  write_status(run, status)
  echo(f'{state} {run.name} ({status["seconds"]} s)' +
       (f': {status["error"]}' if state == 'failed' else ''))
  return status['status']


def execute(runs: list[Run], config_arg: str, extra: list[str],
            parallel: int = 1, echo=print) -> dict[str, str]:
  """Trains every run not yet done, ``parallel`` at a time, as local processes.

  Returns:
    run name -> final status ('done', 'failed', 'skipped' if already done).
  """
  results, queue = split_done(runs, echo)
  active = {}
  while queue or active:
    while queue and len(active) < parallel:
      run = queue.pop(0)
      os.makedirs(run.workdir, exist_ok=True)
      log = open(workdir_lib.path(run.workdir, workdir_lib.LOG), 'a',
                 encoding='utf-8')
      cmd = run.command(config_arg, extra)
      write_status(run, {'status': 'running', 'launcher': 'local',
                         'command': cmd, 'overrides': run.overrides})
      echo(f'start {run.name}')
      proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL,
                              preexec_fn=_die_with_parent)
      active[run.name] = (run, proc, log, time.time())
    time.sleep(0.2)
    for name, (run, proc, log, start) in list(active.items()):
      if proc.poll() is None:
        continue
      log.close()
      del active[name]
      results[name] = finish(run, proc.returncode, time.time() - start,
                             config_arg, extra, echo)
  return results


def write_manifest(workdir: str, config_arg: str, sweep_path: str,
                   extra: list[str], runs: list[Run]):
  """Records what the sweep is, for the report and for resuming.

  A rerun must be the same sweep: if the manifest's base config or shared
  overrides differ, the rerun is refused (its finished runs would otherwise
  be skipped under a label they never had). Runs the manifest already lists
  are kept; new ones are added.
  """
  os.makedirs(workdir, exist_ok=True)
  path = workdir_lib.path(workdir, workdir_lib.MANIFEST)
  old = workdir_lib.read_json(path)
  entries = [{'name': r.name, 'overrides': r.overrides} for r in runs]
  if old:
    same = lambda arg: os.path.basename(arg.partition(':')[0]) + ':' + (
        arg.partition(':')[2])
    changes = []
    if same(old.get('config', '')) != same(config_arg):
      changes.append(f'config: {old.get("config")!r} -> {config_arg!r}')
    if old.get('overrides', []) != extra:
      changes.append(f'shared overrides: {old.get("overrides")} -> {extra}')
    if changes:
      raise UserError(
          f'{workdir} holds a sweep with other settings ({"; ".join(changes)})'
          '; its runs would be mislabelled: use a new --workdir, or rerun '
          'with the same settings')
    known = {e['name'] for e in old.get('runs', [])}
    entries = old.get('runs', []) + [e for e in entries
                                     if e['name'] not in known]
  manifest = {'config': config_arg, 'sweep': sweep_path, 'overrides': extra,
              'runs': entries}
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
    cfg = config.copy_and_resolve_references()
    with cfg.unlocked():
      for k, v in arm.items():
        node = cfg
        *parents, leaf = k.split('.')
        for p in parents:
          node = node[p]
        node[leaf] = v
    try:
      model = specs.model_spec(cfg)
      shape = budget.describe(model.name, model.input_shape, **model.kwargs)
    except (ValueError, TypeError, UserError) as e:
      lines.append(f'{run_name(arm)}: cannot describe ({e})')
      continue
    target = target or shape.macs
    lines.append(f'{run_name(arm)}: {budget.format_shape(shape, target)}')
  return lines
