"""The layout of a run's workdir and of a sweep's, and how its files are read.

A run's workdir holds ``config.json`` (the resolved config), ``metrics.jsonl``,
TensorBoard events, ``checkpoints/`` (orbax), ``summary.json`` when training
ends and ``eval.json`` from ``eval.py``; under a sweep, also ``status.json``
and ``train.log``. A sweep's workdir holds ``sweep.json`` (its manifest), one
sub-workdir per run, and the report. Every other module takes these names
from here.

JSON files are written atomically (a temporary file, then ``os.replace``) and
read back with one error naming the file when it is not valid JSON.
"""
import fcntl
import json
import os

import ml_collections

from inception.errors import UserError

CONFIG = 'config.json'
METRICS = 'metrics.jsonl'
CHECKPOINTS = 'checkpoints'
SUMMARY = 'summary.json'
EVAL = 'eval.json'
RUN_STATUS = 'status.json'  # a sweep's record of one run
LOG = 'train.log'  # a sweep run's stdout and stderr
MANIFEST = 'sweep.json'  # a sweep's runs and shared overrides


def path(workdir: str, name: str) -> str:
  """``workdir/name``."""
  return os.path.join(workdir, name)


def write_json(file: str, obj) -> None:
  """Writes ``obj`` as JSON to ``file`` atomically."""
  tmp = f'{file}.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, file)


def read_json(file: str, default=None):
  """``file``'s JSON content, or ``default`` ({}) when it does not exist.

  Raises:
    UserError: the file exists but is not valid JSON (it names the file).
  """
  if not os.path.exists(file):
    return {} if default is None else default
  try:
    with open(file, encoding='utf-8') as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise UserError(f'{file} is not valid JSON ({e}); restore or remove '
                    'it') from None


def tail(path: str, lines: int = 5) -> str:
  """A log's last ``error:`` line, else its last ``lines`` lines."""
  try:
    with open(path, encoding='utf-8', errors='replace') as f:
      text = f.read().strip().splitlines()
  except OSError:
    return ''
  errors = [l for l in text if l.startswith('error:')]
  return errors[-1] if errors else '\n'.join(text[-lines:])


# The one table of fields added to the configs after runs were saved, with
# the value that reproduces what those runs did: an older run gains them on
# load (so that ``eval.py --workdir OLD --config.eval_flip=true`` works), and
# a resume compares against them (inception.training.identity).
ADDED_FIELDS = {'eval_flip': False, 'ema_decay': 0.0, 'activation_dtype': 'auto',
                'stuck_windows': 5, 'stop_when_stuck': False,
                'grad_clip_norm': 0.0, 'grad_accum_steps': 1,
                'mixup_alpha': 0.0, 'cutmix_alpha': 0.0, 'mix_switch_prob': 0.5,
                'randaugment_num_ops': 0, 'randaugment_magnitude': 9.0}


def resolve(workdir: str) -> str:
  """``workdir`` with ``~`` expanded, made absolute: done once, at the edge.

  Raises:
    UserError: no workdir given.
  """
  if not workdir or not str(workdir).strip():
    raise UserError('--workdir is required')
  return os.path.abspath(os.path.expanduser(str(workdir)))


def with_added_fields(config) -> dict:
  """``config`` (a dict or ConfigDict) as a dict, ``ADDED_FIELDS`` filled in.

  The one place a config saved by an older version gains today's fields.
  """
  if isinstance(config, ml_collections.ConfigDict):
    config = config.to_dict()
  return {**ADDED_FIELDS, **config}


def read_config(file: str) -> dict:
  """A saved ``config.json`` as a dict, with ``ADDED_FIELDS`` filled in.

  Raises:
    UserError: the file is not valid JSON, or not a JSON object.
  """
  saved = read_json(file)
  if not isinstance(saved, dict):
    raise UserError(f'{file} is not a config (a JSON object) but '
                    f'{json.dumps(saved)[:40]}; restore it from a backup or '
                    'use a new --workdir')
  return with_added_fields(saved)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config a run saved in ``workdir`` (plus ``ADDED_FIELDS``)."""
  file = path(workdir, CONFIG)
  if not os.path.exists(file):
    raise UserError(f'{workdir} has no {CONFIG}; pass --config or the '
                    'workdir of a training run')
  return ml_collections.ConfigDict(read_config(file))


def prepare(workdir: str) -> str:
  """Creates ``workdir`` and checks it is writable; returns its absolute path."""
  workdir = resolve(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise UserError(f'cannot create workdir {workdir} ({e.strerror}); choose '
                    'another --workdir') from None
  probe = os.path.join(workdir, f'.write_test.{os.getpid()}')
  try:  # os.access is not enough: it ignores read-only mounts and quotas.
    with open(probe, 'w', encoding='utf-8') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise UserError(f'workdir {workdir} is not writable ({e.strerror}); '
                    'choose another --workdir or fix its permissions') from None
  return workdir


def lock(workdir: str):
  """Holds an exclusive lock on ``workdir`` for this process's lifetime.

  Two processes training the same workdir would corrupt each other's
  checkpoints and metrics; the OS drops the lock when the process dies, even
  from kill -9. Each JAX process of a multi-host run has its own lock file.
  """
  # Imported here: cluster jobs (inception.sweeps.jobs) use this module's
  # names without loading JAX.
  import jax  # pylint: disable=g-import-not-at-top
  f = open(path(workdir, f'.lock.{jax.process_index()}'), 'w')
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.close()
    raise UserError(f'{workdir} is in use by another training process; wait '
                    'for it to finish or choose another --workdir') from None
  return f
