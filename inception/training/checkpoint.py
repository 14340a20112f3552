"""Orbax checkpoints: save, restore the latest good one, refuse a foreign one.

Each checkpoint holds the train state (orbax's array format: no pickle, no
code executed on load) and a small JSON ``meta`` item: the model it belongs
to, the step, and bookkeeping such as the accumulated train time. Orbax
writes into a temporary directory and renames it when complete, so a kill
mid-save leaves the previous checkpoints intact.
"""
import contextlib
import os
import shutil
import sys
import tempfile
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from inception import errors
from inception.training import workdir as workdir_lib
from inception.errors import TrainingError, UserError, first_line

CHECKPOINT_DIR = workdir_lib.CHECKPOINTS


# How orbax's writers (TensorStore among them) report a failed write: an
# OSError, or a ValueError/RuntimeError carrying the OS's message.
_IO_ERRORS = (('No space left on device', 'no space left on the device'),
              ('Disk quota exceeded', 'the disk quota is exceeded'),
              ('Read-only file system', 'the file system is read-only'),
              ('Permission denied', 'permission denied'),
              ('RESOURCE_EXHAUSTED', 'the storage is full'))


def _io_failure(e: BaseException) -> str | None:
  """What went wrong if ``e`` is a failed write; None for anything else."""
  if isinstance(e, OSError):
    return f'{e.strerror or e}: {e.filename or ""}'.rstrip(': ')
  text = str(e)
  for needle, why in _IO_ERRORS:
    if needle in text:
      return why
  return None


class _Held:
  """What the process wrote to stderr (fd 2) while held."""

  def __init__(self):
    self.dropped = False

  def drop(self):
    self.dropped = True


write_stderr = errors.write_stderr  # reaches the terminal while fd 2 is held


@contextlib.contextmanager
def _stderr_held():
  """Holds fd 2's output back; writes it out at the end unless dropped.

  A failed write makes each of TensorStore's writer threads print its own
  traceback straight to fd 2; the failure itself reaches the user as one
  ``error:`` line, so those are dropped. Nothing is lost on success, and
  ``write_stderr`` reaches the terminal meanwhile (a second Ctrl-C).
  """
  held = _Held()
  if sys.stderr is not None:
    sys.stderr.flush()
  try:
    saved = os.dup(2)
  except OSError:  # no descriptor to spare: do not hold
    yield held
    return
  try:
    buffer = tempfile.TemporaryFile()
  except OSError:  # no space for the buffer either: do not hold
    os.close(saved)
    yield held
    return
  os.dup2(buffer.fileno(), 2)
  errors.REAL_STDERR[0] = saved
  try:
    yield held
  finally:
    if sys.stderr is not None:
      sys.stderr.flush()
    os.dup2(saved, 2)
    errors.REAL_STDERR[0] = 2
    os.close(saved)
    try:
      if not held.dropped:
        buffer.seek(0)
        text = buffer.read()
        if text:
          os.write(2, text)
    except OSError:  # a closed terminal: the save itself succeeded
      pass
    finally:
      buffer.close()


class Checkpointer:
  """Wraps an ``ocp.CheckpointManager`` in ``workdir/checkpoints``.

  The training run is the only writer. Every other process (``eval.py``, the
  notebook, ``init_from``, the report) opens it with ``read_only=True``: it
  sees only committed checkpoints, and never cleans, deletes or moves
  anything, so reading a run that is training cannot disturb it.
  """

  def __init__(self, workdir: str, keep: int | None = None,
               read_only: bool = False):
    self.directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
    self.read_only = read_only
    if read_only:
      options = ocp.CheckpointManagerOptions(
          read_only=True, create=False, cleanup_tmp_directories=False,
          enable_async_checkpointing=False)
    else:
      options = ocp.CheckpointManagerOptions(
          max_to_keep=keep, create=True,
          # A kill mid-save leaves a temporary directory; remove it.
          cleanup_tmp_directories=True,
          # Synchronous: an I/O error surfaces at the save that caused it.
          enable_async_checkpointing=False)
    self._manager = _vanish_safe(
        lambda: ocp.CheckpointManager(self.directory, options=options))

  def reload(self):
    """Lists the checkpoints on disk again (another process may write)."""
    _vanish_safe(self._manager.reload)

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state, meta: dict):
    """Saves ``state`` at ``step``; an I/O failure is one clear error."""
    if step in self._manager.all_steps():
      return
    try:
      with _stderr_held() as held:
        try:
          self._manager.save(step, args=ocp.args.Composite(
              state=ocp.args.StandardSave(state),
              meta=ocp.args.JsonSave(meta)))
        except Exception:  # pylint: disable=broad-except
          held.drop()  # the writers' own tracebacks of this failure
          raise
    except Exception as e:  # pylint: disable=broad-except
      why = _io_failure(e)
      if why is None:
        raise
      self._remove_partial(step)
      errors.mute_stderr()  # the writers print on after the save returned
      raise TrainingError(
          f'saving the checkpoint at step {step} failed ({why}; under '
          f'{self.directory}); the previous checkpoints {self.steps()} are '
          'kept: free space or fix permissions, then run the same command '
          'to continue') from None

  def _remove_partial(self, step: int):
    """Deletes the failed save's temporary directory (frees the space)."""
    for name in os.listdir(self.directory) if os.path.isdir(
        self.directory) else []:
      if name.startswith(f'{step}.orbax-checkpoint-tmp'):
        shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

  def read_meta(self, step: int) -> dict:
    return self._manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))['meta']

  def check_compatible(self, model, workdir: str):
    """Raises a UserError when the workdir's checkpoints are another model's.

    Args:
      model: the ``specs.ModelSpec`` the checkpoints should be of.
      workdir: named in the error.
    """
    steps = self.steps()
    if not steps:
      return
    want = model.signature()
    for step in reversed(steps):
      try:
        have = self.read_meta(step).get('signature')
        break
      except Exception:  # pylint: disable=broad-except
        continue  # unreadable: restore_latest reports it
    else:
      return
    if have != want:
      diff = _first_difference(have or {}, want)
      raise UserError(
          f'{workdir} holds checkpoints of a different model ({diff}); use a '
          f'fresh --workdir, or --config.init_from={workdir} to start from '
          'its weights')

  def restore_latest(self, abstract_state) -> tuple[Any, dict] | None:
    """The newest readable checkpoint as ``(state, meta)``, or None if none.

    A corrupt or truncated checkpoint is skipped with a warning naming its
    step; if checkpoints exist but none is readable, this raises instead of
    silently starting from scratch.
    """
    if self.read_only:
      return self._read_latest(abstract_state)
    steps = self.steps()
    bad = []
    for step in reversed(steps):
      try:
        restored = self.restore(step, abstract_state)
      except Exception as e:  # pylint: disable=broad-except
        bad.append(step)
        logging.warning('checkpoint at step %d is unreadable (%s); falling '
                        'back to the previous one', step, first_line(e))
        continue
      if bad:
        self._quarantine(bad)
        logging.warning('resuming from step %d; unreadable checkpoints at '
                        'steps %s were moved to %s', step, bad,
                        self.quarantine_dir)
      return restored
    if steps:
      raise TrainingError(f'every checkpoint in {self.directory} is '
                          f'unreadable (steps {steps}); move the directory '
                          'away to start from scratch')
    return None

  def _read_latest(self, abstract_state, attempts: int = 3):
    """Reader: the newest checkpoint that restores, trying older ones.

    A run training in the same workdir may delete an old checkpoint while it
    is read (``keep_checkpoints``): the steps are listed again and the read
    retried, ``attempts`` times in all.
    """
    steps = []
    for attempt in range(attempts):
      if attempt:
        self.reload()
      steps = self.steps()
      for step in reversed(steps):
        try:
          return self.restore(step, abstract_state)
        except Exception as e:  # pylint: disable=broad-except
          logging.warning('checkpoint at step %d is unreadable (%s); trying '
                          'the previous one', step, first_line(e))
    if steps:
      raise TrainingError(
          f'no checkpoint in {self.directory} could be read (steps {steps});'
          ' nothing was changed; if a run is training there, try again')
    return None

  @property
  def quarantine_dir(self) -> str:
    return self.directory + '_unreadable'

  def _quarantine(self, steps: list[int]):
    """Moves unreadable checkpoints aside (kept for inspection, not reused).

    The resumed run saves those steps again, which orbax would otherwise
    skip as already present.
    """
    if jax.process_index() == 0:
      os.makedirs(self.quarantine_dir, exist_ok=True)
      for step in steps:
        target = os.path.join(self.quarantine_dir, str(step))
        suffix = 0
        while os.path.exists(target):
          suffix += 1
          target = os.path.join(self.quarantine_dir, f'{step}.{suffix}')
        os.replace(os.path.join(self.directory, str(step)), target)
    self.reload()

  def restore(self, step: int, abstract_state) -> tuple[Any, dict]:
    """``(state, meta)`` saved at ``step``, placed like ``abstract_state``.

    With ``abstract_state=None`` the state is restored as saved (a dict).
    """
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        meta=ocp.args.JsonRestore()))
    return restored['state'], restored['meta']

  def reached_preemption(self, step: int) -> bool:
    """Multi-host: whether JAX's preemption service asks all to stop here."""
    return self._manager.reached_preemption(step)

  def close(self):
    self._manager.close()


def _vanish_safe(list_checkpoints, attempts: int = 5):
  """Runs ``list_checkpoints`` again when a listed checkpoint vanished.

  Orbax lists the step directories, then stats each one. A run training in
  the same workdir deletes old checkpoints (``keep_checkpoints``), so a
  reader can see a step in the listing that is gone by the stat; listing
  again sees the directory as it is now. A deletion between orbax's
  ``exists()`` and ``is_dir()`` on the step surfaces as NotADirectoryError.
  """
  for attempt in range(attempts):
    try:
      return list_checkpoints()
    except (FileNotFoundError, NotADirectoryError):
      if attempt == attempts - 1:
        raise


def has_checkpoints(workdir: str) -> bool:
  """Whether ``workdir`` holds a committed checkpoint (no manager opened)."""
  directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
  return os.path.isdir(directory) and any(
      name.isdigit() for name in os.listdir(directory))


def read(workdir: str, abstract_state, step: int | None = None,
         model=None) -> tuple[Any, dict]:
  """``(state, meta)`` of ``workdir``'s latest (or ``step``) checkpoint, read-only.

  For every reader of a run that may be training: committed checkpoints
  only, nothing cleaned or moved. With ``model`` (a ``specs.ModelSpec``),
  checkpoints of another model are refused first (``check_compatible``).

  Raises:
    UserError: no checkpoint, or no checkpoint at ``step``.
    TrainingError: checkpoints exist but none can be read.
  """
  directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
  if not os.path.isdir(directory):
    raise UserError(f'{workdir} has no checkpoint; train first (python '
                    'train.py --workdir ...) or pass the workdir of a '
                    'training run')
  ckpt = Checkpointer(workdir, read_only=True)
  try:
    if model is not None:
      ckpt.check_compatible(model, workdir)
    steps = ckpt.steps()
    if not steps:
      raise UserError(f'{workdir} has no complete checkpoint yet; train '
                      'first, or wait for the run\'s first save')
    if step is None:
      return ckpt.restore_latest(abstract_state)
    if step not in steps:
      raise UserError(f'no checkpoint at step {step} in {workdir}; saved '
                      f'steps: {steps}')
    try:
      return ckpt.restore(step, abstract_state)
    except Exception as e:  # pylint: disable=broad-except
      raise TrainingError(f'the checkpoint at step {step} in {workdir} '
                          f'cannot be read ({first_line(e)})') from None
  finally:
    ckpt.close()


def _first_difference(have: dict, want: dict, prefix: str = '') -> str:
  for key in sorted(set(have) | set(want)):
    a, b = have.get(key), want.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      if a != b:
        return _first_difference(a, b, f'{prefix}{key}.')
    elif a != b:
      return f'checkpoint has {prefix}{key}={a!r}, config asks for {b!r}'
  return 'signatures differ'


def load_params(path: str, params, batch_stats) -> tuple[Any, Any]:
  """Params and batch stats of another run's latest checkpoint (init_from).

  Args:
    path: a workdir or its ``checkpoints`` directory.
    params: this run's params; the loaded tree must have the same shapes.
    batch_stats: this run's BatchNorm statistics, likewise.
  """
  workdir = (os.path.dirname(path.rstrip('/'))
             if os.path.basename(path.rstrip('/')) == CHECKPOINT_DIR else path)
  if not os.path.isdir(os.path.join(workdir, CHECKPOINT_DIR)):
    raise UserError(f'init_from={path!r} has no {CHECKPOINT_DIR}/ directory; '
                    'point --config.init_from at a training workdir')
  try:
    # Restored as saved (no target), so a different optimizer does not
    # matter; a corrupt latest checkpoint falls back to the previous one.
    saved, _ = read(workdir, None)
  except (UserError, TrainingError) as e:
    raise UserError(f'init_from={path!r}: {e}') from None
  # The weights the source run evaluates: its EMA when it kept one.
  source = saved.get('ema') or saved
  loaded = (source.get('params', {}), source.get('batch_stats', {}))
  shapes = lambda t: jax.tree.map(lambda x: tuple(x.shape), t)
  if shapes(loaded) != shapes((params, batch_stats)):
    raise UserError(f'init_from={path!r} holds a model whose parameter shapes '
                    'differ from this config\'s model; check model.name/width')
  return jax.tree.map(lambda new, old: jax.device_put(new, old.sharding),
                      loaded, (params, batch_stats))
