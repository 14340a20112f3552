"""A run's metrics: the train log, its writers (JSON lines + TensorBoard via
tensorboardX) and the progress bar (tqdm).

``TrainLog`` is what the training loop reports through: it keeps the train
metrics between events, times the steps, writes log windows and evaluations,
and notices a stuck run.
"""
import json
import math
import os
import sys
import time
from typing import Any, Mapping

import jax
import numpy as np
import tqdm
from absl import logging

from inception.errors import TrainingError, first_line
from inception.training import workdir as workdir_lib


def _plain(value):
  value = float(value) if hasattr(value, '__float__') else value
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # JSON has no NaN/Inf
  return value


class JsonlWriter:
  """Appends one JSON object per ``write_scalars`` call: ``{"step", ...}``.

  Each line is flushed and fsynced as written, so a killed run loses no line
  it has logged; ``truncate_after`` removes what a resumed run will redo.
  It takes scalars only, as ``TensorBoardWriter`` does.
  """

  def __init__(self, path: str):
    self._file = open(path, 'a', encoding='utf-8')

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    record = {'step': int(step), **{k: _plain(v) for k, v in scalars.items()}}
    self._file.write(json.dumps(record) + '\n')
    self._file.flush()
    os.fsync(self._file.fileno())

  def flush(self):
    self._file.flush()

  def close(self):
    self._file.close()


def _parse(line: str):
  """A record (a dict with an integer ``step``), or None."""
  try:
    record = json.loads(line)
  except json.JSONDecodeError:
    return None
  if not isinstance(record, dict) or not isinstance(record.get('step'), int):
    return None
  return record


def read_jsonl(path: str) -> list[dict]:
  """Every record of a metrics file; lines that are not records are skipped."""
  if not os.path.exists(path):
    return []
  with open(path, encoding='utf-8', errors='replace') as f:
    return [r for r in map(_parse, f) if r is not None]


def append_record(path: str, record: dict):
  """Appends one record (flushed) to a metrics file."""
  with open(path, 'a', encoding='utf-8') as f:
    f.write(json.dumps(record) + '\n')


def truncate_after(path: str, step: int):
  """Drops the records after ``step``, atomically; keeps everything else.

  A resumed run restarts from its checkpoint at ``step``; records the killed
  run wrote after it would otherwise appear twice. Lines that cannot be
  parsed (a torn write, a hand edit) are never deleted: they are moved to
  ``<path>.unparsed`` with a warning, and every record at or before ``step``
  is kept, wherever it is in the file.
  """
  if not os.path.exists(path):
    return
  with open(path, encoding='utf-8', errors='replace') as f:
    lines = f.read().splitlines()
  kept, unparsed, dropped = [], [], 0
  for line in lines:
    if not line.strip():
      continue
    record = _parse(line)
    if record is None:
      unparsed.append(line)
    elif record['step'] <= step:
      kept.append(line)
    else:
      dropped += 1
  if not unparsed and not dropped:
    return
  if unparsed:
    with open(path + '.unparsed', 'a', encoding='utf-8') as f:
      f.writelines(line + '\n' for line in unparsed)
    logging.warning('%s: %d line(s) that are not metric records were moved '
                    'to %s.unparsed', path, len(unparsed), path)
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    f.writelines(line + '\n' for line in kept)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


class TensorBoardWriter:
  """Scalars as TensorBoard event files in the workdir (tensorboardX).

  tensorboardX writes the event files without TensorFlow, whose import costs
  several seconds of CPU per process (clu's writer imports it): a run on
  in-memory data never imports TF.
  """

  def __init__(self, workdir: str):
    import tensorboardX  # pylint: disable=g-import-not-at-top
    self._writer = tensorboardX.SummaryWriter(workdir)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    for name, value in scalars.items():
      self._writer.add_scalar(name, float(value), int(step))

  def flush(self):
    self._writer.flush()

  def close(self):
    self._writer.close()


class _Writers:
  """Hands every call to each of ``writers``, in order."""

  def __init__(self, writers):
    self._writers = writers

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    for w in self._writers:
      w.write_scalars(step, scalars)

  def flush(self):
    for w in self._writers:
      w.flush()

  def close(self):
    for w in self._writers:
      w.close()


def create_writer(workdir: str, is_main: bool):
  """JSONL + TensorBoard on the main process; a writer of nothing elsewhere.

  Where tensorboardX is not installed (an accelerator image that carries only
  the core requirements), the run writes metrics.jsonl alone, with a warning.
  """
  if not is_main:
    return _NoWriter()
  jsonl = JsonlWriter(workdir_lib.path(workdir, workdir_lib.METRICS))
  try:
    board = TensorBoardWriter(workdir)
  except ImportError:
    logging.warning('tensorboardX is not installed: no TensorBoard events; '
                    'metrics go to %s only', workdir_lib.METRICS)
    return jsonl
  return _Writers([jsonl, board])


class _NoWriter:
  """Drops every write: the metric writer of non-main processes."""

  def __getattr__(self, name):
    return lambda *args, **kwargs: None


class Progress:
  """A tqdm bar with loss and images/s; plain log lines when not on a TTY."""

  def __init__(self, total: int, initial: int, batch_size: int,
               enabled: bool = True):
    self._batch = batch_size
    self._tty = enabled and sys.stderr.isatty()
    # tqdm's own rate and ETA would count the compiling first step; ours
    # (in the postfix) start after it.
    self._bar = tqdm.tqdm(total=total, initial=initial, unit='step',
                          dynamic_ncols=True, disable=not self._tty,
                          bar_format='{l_bar}{bar}| {n_fmt}/{total_fmt} '
                          '[{elapsed}{postfix}]')
    self._enabled = enabled
    self._total = total
    self._start = time.perf_counter()
    self._initial = initial

  def start_clock(self, step: int):
    """Restarts the ETA's clock at ``step`` (after compilation)."""
    self._start, self._initial = time.perf_counter(), step

  def update(self, step: int, n: int = 1):
    del step
    self._bar.update(n)

  def eta(self, step: int) -> float:
    """Seconds left at the rate measured since ``start_clock`` (inf: none)."""
    done = step - self._initial
    rate = done / max(time.perf_counter() - self._start, 1e-9)
    return (self._total - step) / rate if rate > 0 else float('inf')

  def log(self, step: int, loss: float, images_per_s: float):
    """Shows the latest window's loss, throughput and the ETA.

    Before any step is timed (the first window holds the compile) both read
    '-' rather than nan and inf.
    """
    eta = self.eta(step)
    rate = f'{images_per_s:.0f}' if math.isfinite(images_per_s) else '-'
    eta = f'{eta:.0f}s' if math.isfinite(eta) else '-'
    if self._tty:
      self._bar.set_postfix(loss=f'{loss:.4f}', img_s=rate, eta=eta)
    elif self._enabled:
      print(f'step {step}/{self._total}  loss {loss:.4f}  {rate} img/s  '
            f'eta {eta}', flush=True)

  def write(self, message: str):
    """Prints above the bar without breaking it."""
    if self._enabled:
      self._bar.write(message) if self._tty else print(message, flush=True)

  def close(self):
    self._bar.close()


def check_finite(pending: list[tuple[int, dict]]) -> None:
  """Stops the run at the first step whose loss or gradient was not finite."""
  for step, m in pending:
    if not m['finite']:
      what = ('loss' if not np.isfinite(m['total_loss'])
              else 'gradient norm')
      value = m['total_loss'] if what == 'loss' else m['grad_norm']
      raise TrainingError(
          f'step {step}: the {what} became {value} (loss {m["loss"]}, '
          f'gradient norm {m["grad_norm"]}); the run stopped and its last '
          'good checkpoint is kept; lower --config.learning_rate or check '
          'the data')


# A gradient norm this small, at chance loss, is a dead network: the dead and
# the live paper NiN of results/nin_paper_pilot sit either side of it.
GRAD_NORM_DEAD = 0.05


class StuckWatch:
  """Notices a run whose loss sits at chance with a vanishing gradient.

  A network that died at initialisation (or under a warmup squeezed into a
  few steps, or too high a learning rate) predicts the uniform distribution:
  its cross-entropy is log(num_classes) and its gradient norm is ~0. After
  ``windows`` such log windows in a row it says so, once.
  """

  def __init__(self, num_classes: int, windows: int, count: int = 0):
    self.chance, self.windows, self.count = math.log(num_classes), windows, count

  def observe(self, loss: float, grad_norm: float) -> bool:
    """Whether the run has just become stuck (True once per run: a dead
    network's gradient flickers around the threshold)."""
    if not self.windows or self.count >= self.windows:
      return False
    stuck = (abs(loss - self.chance) < 0.01 * self.chance
             and grad_norm < GRAD_NORM_DEAD)
    self.count = self.count + 1 if stuck else 0
    return self.count == self.windows

  def message(self, step: int, loss: float, grad_norm: float) -> str:
    return (f'step {step}: the run looks stuck: the training loss has been '
            f'{loss:.4f}, chance level (log {round(math.exp(self.chance))} = '
            f'{self.chance:.4f}), with a gradient norm of {grad_norm:.2g} for '
            f'{self.windows} log windows; likely causes: too high a learning '
            'rate, a warmup too short for it, an initialisation that kills '
            'the signal, or a ReLU that zeroes every class score (see '
            '--config.learning_rate, warmup_epochs; NiN: '
            '--config.model.classifier_relu=False)')


def _window_means(window: list[tuple[int, dict]]) -> dict:
  """Each train metric's mean over the steps of one log window.

  In float64, so that a window restored from a checkpoint's JSON gives the
  bits an uninterrupted run gives.
  """
  keys = [k for k in window[0][1] if k != 'finite']
  return {f'train/{k}': float(np.mean(np.asarray([m[k] for _, m in window],
                                                 np.float64)))
          for k in keys}


class Profile:
  """A ``jax.profiler`` trace of ``steps`` train steps in ``workdir/profile``.

  Started after the first step of this invocation, which compiles, so the
  trace holds steady-state steps only; stopped after ``steps`` more, or by
  ``close`` when training ends or fails first. TensorBoard's profile plugin
  reads the layout it writes (``plugins/profile/<run>/<host>.xplane.pb``).
  Profiling changes no result, so it is no config field: a resumed run may
  trace or not.
  """

  def __init__(self, workdir: str, steps: int, progress):
    self.dir = os.path.join(workdir, 'profile')
    self.steps, self.progress = steps, progress
    self.first, self.traced, self.active = 0, 0, False

  def start(self, step: int):
    """Starts tracing before step ``step + 1`` (no-op when off)."""
    if not self.steps:
      return
    try:
      jax.profiler.start_trace(self.dir)
    except RuntimeError as e:  # e.g. another trace is running
      self.steps = 0
      self.progress.write(f'warning: no profile: {first_line(e)}')
      return
    self.first, self.active = step + 1, True

  def step_done(self, step_metrics) -> float:
    """Counts a traced step; stops after the last one, once it has run.

    Returns:
      The seconds spent stopping (writing the trace), which are no
      training time.
    """
    if not self.active:
      return 0.0
    self.traced += 1
    if self.traced < self.steps:
      return 0.0
    jax.block_until_ready(step_metrics)
    start = time.perf_counter()
    self.close()
    return time.perf_counter() - start

  def close(self):
    """Stops the trace if one is running and says where it is."""
    if not self.active:
      return
    self.active = False
    try:
      jax.profiler.stop_trace()
    except Exception as e:  # pylint: disable=broad-except
      # Never in place of the error that ended training.
      self.progress.write(f'warning: the profile was not saved: '
                          f'{first_line(e)}')
      return
    runs = os.path.join(self.dir, 'plugins', 'profile')
    run = max(os.listdir(runs), default='') if os.path.isdir(runs) else ''
    last = self.first + self.traced - 1
    what = (f'steps {self.first}-{last}' if self.traced > 1
            else f'step {self.first}' if self.traced else 'no step')
    self.progress.write(
        f'profile: {what} traced into {os.path.join(runs, run)}; view it '
        f'with tensorboard --logdir {os.path.dirname(self.dir)} (Profile '
        'tab; pip install tensorboard-plugin-profile)')


class TrainLog:
  """The training loop's metrics: step timing, log windows, evaluations.

  Steps' device metrics are held until an event (a log, an evaluation, a
  save or a stop) fetches them at once, so the host never waits on a step
  in between. Time spent compiling, evaluating, saving or writing a profile
  is not training time. The open log window, its timing and the stuck count
  go into each checkpoint (``saved``), so that a resumed run logs exactly
  what an uninterrupted one logs.
  """

  def __init__(self, workdir: str, *, is_main: bool, total: int, start: int,
               batch_size: int, steps_per_epoch: int, num_classes: int,
               stuck_windows: int, profile_steps: int, saved: dict,
               changes: dict):
    """Opens the writers; drops records a resume will redo.

    Args:
      workdir: the run's workdir.
      is_main: whether this process writes (process 0).
      total: the run's steps.
      start: the step this invocation starts after.
      batch_size: the global batch.
      steps_per_epoch: for the ``train/epoch`` metric.
      num_classes: the chance level of the stuck watch.
      stuck_windows: log windows at chance before a warning; 0: off.
      profile_steps: steps to trace after the first (compiling) one; 0: off.
      saved: the checkpoint's meta (``train_time_s``, ``timed_steps``,
        ``log``, ``final_eval``, ``best_eval_accuracy``); {} for a fresh
        run.
      changes: config fields a resume changed (cadence), recorded once.
    """
    self.path = workdir_lib.path(workdir, workdir_lib.METRICS)
    self._is_main = is_main
    if is_main:
      truncate_after(self.path, start)
      if changes:
        append_record(self.path, {
            'step': start, 'config_change': {
                k: {'old': a, 'new': b} for k, (a, b) in changes.items()}})
    self.writer = create_writer(workdir, is_main)
    self.progress = Progress(total, start, batch_size, enabled=is_main)
    self._batch, self._steps_per_epoch = batch_size, steps_per_epoch
    log = saved.get('log', {})
    self.train_time_s = saved.get('train_time_s', 0.0)
    self.timed_steps = saved.get('timed_steps', 0)
    self.compile_time_s = saved.get('compile_time_s')  # this invocation's
    self._window = [(s, m) for s, m in log.get('window', [])]
    self._window_steps = log.get('steps', 0)
    self._window_seconds = log.get('seconds', 0.0)
    self._watch = StuckWatch(num_classes, stuck_windows,
                             log.get('stuck_windows', 0))
    self.final_eval = saved.get('final_eval')  # the last evaluation's
    self.best_eval_accuracy = saved.get('best_eval_accuracy')
    self._profile = Profile(workdir, profile_steps, self.progress)
    self._pending = []  # device metrics since the last event
    self._untimed = 0  # of them, the steps not yet timed
    self._clock = time.perf_counter()

  def write(self, message: str):
    """A line above the progress bar (main process only)."""
    self.progress.write(message)

  def step(self, done: int, step_metrics, first: bool = False):
    """Adds the (device) metrics of step ``done``.

    ``first``: the first step of this invocation, which compiles: its
    metrics are logged, but it is not training time (its seconds go to
    ``compile_time_s``), the ETA's clock starts after it, and so does the
    profile.
    """
    self.exclude(self._profile.step_done(step_metrics))
    self._pending.append((done, step_metrics))
    self._untimed += 1
    if first:
      jax.block_until_ready(step_metrics)
      self.compile_time_s = time.perf_counter() - self._clock
      self.restart_clock()
      self._untimed = 0
      self.progress.start_clock(done)
      self._profile.start(done)
    self.progress.update(done)

  def exclude(self, seconds: float):
    """Leaves ``seconds`` (e.g. writing a profile) out of training time."""
    self._clock += seconds

  def restart_clock(self):
    """Training time counts again from now (after an event's work)."""
    self._clock = time.perf_counter()

  def flush(self, done: int, is_log: bool) -> str | None:
    """Fetches the pending metrics; logs the window when ``is_log``.

    Returns:
      The stuck warning when the run has just become stuck, else None.

    Raises:
      TrainingError: a pending step's loss or gradient was not finite.
    """
    pending = jax.device_get(self._pending)
    elapsed = time.perf_counter() - self._clock
    self.train_time_s += elapsed
    self.timed_steps += self._untimed
    self._window_seconds += elapsed
    self._window_steps += self._untimed
    self._pending, self._untimed = [], 0
    check_finite(pending)
    self._window += pending
    message = None
    if is_log:
      scalars = _window_means(self._window)
      scalars['train/epoch'] = done / self._steps_per_epoch
      if self._window_steps:  # none when the window held only the compile
        scalars['train/images_per_s'] = (self._window_steps * self._batch /
                                         self._window_seconds)
      self.writer.write_scalars(done, scalars)
      self.progress.log(done, scalars['train/loss'],
                        scalars.get('train/images_per_s', float('nan')))
      self._window, self._window_steps, self._window_seconds = [], 0, 0.0
      if self._watch.observe(scalars['train/loss'],
                             scalars['train/grad_norm']):
        message = self._watch.message(done, scalars['train/loss'],
                                      scalars['train/grad_norm'])
        self.progress.write(f'warning: {message}')
        if self._is_main:
          append_record(self.path, {'step': done, 'warning': 'stuck',
                                    'message': message})
    self.writer.flush()
    return message

  def record_evaluation(self, result: dict):
    """Keeps ``result`` (``evaluate.run``'s) as the final, maybe best, eval."""
    self.final_eval = {k: result[k] for k in
                       ('accuracy', 'top5_accuracy', 'loss', 'num_examples')}
    self.best_eval_accuracy = max(self.best_eval_accuracy or 0.0,
                                  result['accuracy'])

  def evaluation(self, done: int, result: dict, wall_time_s: float):
    """Records and writes an evaluation of step ``done``.

    ``wall_time_s``: since the run first started, resumes included (the
    x-axis of time-to-accuracy curves).
    """
    self.record_evaluation(result)
    top5 = ({'eval/top5_accuracy': result['top5_accuracy']}
            if result['top5_accuracy'] is not None else {})
    self.writer.write_scalars(done, {
        'eval/accuracy': result['accuracy'], 'eval/loss': result['loss'],
        **top5, 'eval/wall_time_s': wall_time_s})
    self.writer.flush()
    self.progress.write(f'step {done}: eval accuracy {result["accuracy"]:.4f},'
                        f' loss {result["loss"]:.4f}')

  def saved(self) -> dict:
    """What a checkpoint's meta keeps of the log: timing, window, evals."""
    return {'train_time_s': self.train_time_s,
            'compile_time_s': self.compile_time_s,
            'final_eval': self.final_eval,
            'best_eval_accuracy': self.best_eval_accuracy,
            'timed_steps': self.timed_steps,
            'log': {'window': [[step, {k: float(v) for k, v in m.items()
                                       if k != 'finite'}]
                               for step, m in self._window],
                    'steps': self._window_steps,
                    'seconds': self._window_seconds,
                    'stuck_windows': self._watch.count}}

  def close(self):
    """Stops a profile still tracing; closes the bar and the writers."""
    self._profile.close()
    self.progress.close()
    self.writer.close()
