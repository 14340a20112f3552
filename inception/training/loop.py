"""The training loop: ``train_and_evaluate(config, workdir)``.

Side effects (I/O, logging, checkpoints, signals) live here; the steps in
``inception.training.steps`` are pure and jit-compiled in ``inception.training.experiment``.

A run is a pure function of its config: the data order, augmentation and
dropout masks of step ``s`` depend only on ``config.seed`` and ``s``, so a
run resumed from a checkpoint continues exactly as if never stopped.
"""
import contextlib
import math
import os
import signal
import threading
import time

import jax
import numpy as np
from absl import logging

from inception import data, provenance
from inception.training import (checkpoint, evaluate, experiment, identity,
                                metrics, sharding, specs,
                                workdir as workdir_lib)
from inception.errors import TrainingError, first_line


class _Signals:
  """SIGTERM and a first Ctrl-C (SIGINT) ask the run to save and stop.

  Installed before set-up, so that a signal during set-up, compilation or a
  save is only noted: the loop then saves at the current step (or, before
  the first step, stops with nothing to save) and exits 0. A second SIGINT
  aborts at once, exit 130, keeping the last saved checkpoint. With several
  processes, JAX's preemption service (orbax ``reached_preemption``) makes
  every process stop at the same step.
  """

  def __init__(self):
    self.requested = ''  # the first signal's name
    self._previous = {}
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    del frame
    # To the real stderr: a save in progress holds fd 2 back.
    if signum == signal.SIGINT and self.requested:
      checkpoint.write_stderr('error: interrupted twice; aborted without '
                              'saving (the last saved checkpoint is kept)\n')
      os._exit(130)  # pylint: disable=protected-access
    if not self.requested:
      self.requested = signal.Signals(signum).name
      if signum == signal.SIGINT:
        checkpoint.write_stderr('interrupted: saving a checkpoint at the '
                                'current step (Ctrl-C again aborts without '
                                'saving)\n')

  def reached(self, ckpt: checkpoint.Checkpointer, step: int) -> bool:
    if jax.process_count() > 1:
      return ckpt.reached_preemption(step)
    return bool(self.requested)

  def restore(self):
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)
    self._previous = {}


def _check_finite(pending: list[tuple[int, dict]]) -> None:
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


class _StuckWatch:
  """Notices a run whose loss sits at chance with a vanishing gradient.

  A network that died at initialisation (or under a warmup squeezed into a
  few steps, or too high a learning rate) predicts the uniform distribution:
  its cross-entropy is log(num_classes) and its gradient norm is ~0. After
  ``windows`` such log windows in a row it says so, once.
  """

  def __init__(self, num_classes: int, windows: int):
    self.chance, self.windows, self.count = math.log(num_classes), windows, 0

  def observe(self, loss: float, grad_norm: float) -> bool:
    """Whether the run has just become stuck (True once per stuck stretch)."""
    if not self.windows:
      return False
    stuck = abs(loss - self.chance) < 0.01 * self.chance and grad_norm < 1e-2
    self.count = self.count + 1 if stuck else 0
    return self.count == self.windows

  def message(self, step: int, loss: float, grad_norm: float) -> str:
    return (f'step {step}: the run looks stuck: the training loss has been '
            f'{loss:.4f}, chance level (log {round(math.exp(self.chance))} = '
            f'{self.chance:.4f}), with a gradient norm of {grad_norm:.2g} for '
            f'{self.windows} log windows; likely causes: too high a learning '
            'rate, a warmup too short for it, or an initialisation that '
            'kills the signal (see --config.learning_rate, warmup_epochs)')


class _Profile:
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

  def annotate(self, step: int):
    """A step marker for the profiler's step-time views while tracing."""
    if not self.active:
      return contextlib.nullcontext()
    return jax.profiler.StepTraceAnnotation('train', step_num=step)

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


def _window_means(window: list[tuple[int, dict]]) -> dict:
  """Each train metric's mean over the steps of one log window.

  In float64, so that a window restored from a checkpoint's JSON gives the
  bits an uninterrupted run gives.
  """
  keys = [k for k in window[0][1] if k != 'finite']
  return {f'train/{k}': float(np.mean(np.asarray([m[k] for _, m in window],
                                                 np.float64)))
          for k in keys}


def _saved_window(window: list[tuple[int, dict]]) -> list:
  """A log window as JSON for the checkpoint's meta."""
  return [[step, {k: float(v) for k, v in m.items() if k != 'finite'}]
          for step, m in window]


def train_and_evaluate(config, workdir: str,
                       stop_after_steps: int | None = None, *,
                       profile_steps: int = 0) -> dict:
  """Trains ``config`` in ``workdir``, resuming from its latest checkpoint.

  ``stop_after_steps`` ends this invocation, with a checkpoint, after that
  many steps (for time-limited job slots); running again continues.
  ``profile_steps`` > 0 traces that many steps after the first (compiling)
  one with ``jax.profiler`` into ``workdir/profile`` (TensorBoard's profile
  plugin); it changes nothing else.

  Writes ``config.json``, ``metrics.jsonl``, TensorBoard events,
  ``checkpoints/`` and, when training ends, ``summary.json``.

  Returns:
    The summary: status ('done', or 'stopped' by SIGTERM, Ctrl-C or
    ``stop_after_steps``), step, params, macs, final
    and best eval accuracy, train time and images/s.

  Raises:
    UserError: bad config, data or workdir (nothing is written), or a
      resumed workdir whose saved config differs in a field that changes
      the result.
    TrainingError: the run cannot go on (the last good checkpoint is kept).
  """
  if profile_steps < 0:
    raise ValueError(f'profile_steps={profile_steps} must be 0 or more')
  spec = specs.read(config)  # the edge: below it, typed specs only
  workdir = workdir_lib.resolve(workdir)
  signals = _Signals()
  try:
    return _train(spec, workdir, stop_after_steps, signals, profile_steps)
  except RuntimeError as e:  # XLA's errors are RuntimeErrors
    if 'RESOURCE_EXHAUSTED' not in str(e):
      raise
    size = spec.model.image_size
    raise TrainingError(
        f'out of memory ({first_line(e)}) with batch_size '
        f'{spec.data.batch_size} and {size}x{size} images; lower '
        f'--config.batch_size (e.g. to {max(1, spec.data.batch_size // 2)}) '
        'or --config.image_size; the last '
        'checkpoint is kept') from None
  finally:
    signals.restore()


def _evaluate_into(meta: dict, exp, state) -> dict:
  """Evaluates ``state``; records it as the final (and maybe best) eval."""
  result = evaluate.run(exp, state)
  meta['final_eval'] = {k: result[k] for k in
                        ('accuracy', 'top5_accuracy', 'loss', 'num_examples')}
  meta['best_eval_accuracy'] = max(meta['best_eval_accuracy'] or 0.0,
                                   result['accuracy'])
  return result


def _train(spec, workdir, stop_after_steps, signals: _Signals,
           profile_steps: int = 0) -> dict:
  """``train_and_evaluate`` with its signal handlers installed."""
  run_start = time.perf_counter()  # wall time includes data loading and init
  # The run's identity, config and data are checked before anything is
  # written.
  has_checkpoints = checkpoint.has_checkpoints(workdir)
  changes = identity.check_resume(spec.identity, workdir, has_checkpoints)
  exp = experiment.setup(spec)
  state = exp.init_state()
  if spec.loop.init_from and not has_checkpoints:
    # Before the workdir is touched: a refused init_from writes nothing.
    params, batch_stats = checkpoint.load_params(
        spec.loop.init_from, state.params, state.batch_stats)
    state = state.with_variables(params, batch_stats)
  workdir = workdir_lib.prepare(workdir)
  lock = workdir_lib.lock(workdir)
  is_main = jax.process_index() == 0
  ckpt = checkpoint.Checkpointer(workdir, spec.loop.keep_checkpoints)
  ckpt.check_compatible(spec.model, workdir)
  meta = {'signature': spec.model.signature(), 'train_time_s': 0.0,
          'timed_steps': 0, 'wall_time_s': 0.0, 'best_eval_accuracy': None,
          'final_eval': None}
  restored = ckpt.restore_latest(exp.abstract_state())
  if restored is not None:
    state, saved_meta = restored
    meta.update(saved_meta)
  start = int(jax.device_get(state.step))
  total = exp.total_steps
  metrics_path = workdir_lib.path(workdir, workdir_lib.METRICS)
  if is_main:
    workdir_lib.write_json(workdir_lib.path(workdir, workdir_lib.CONFIG),
                           spec.identity)
    metrics.truncate_after(metrics_path, start)
    if changes:  # fields that do not change the result, e.g. log cadence
      metrics.append_record(metrics_path, {
          'step': start, 'config_change': {k: {'old': a, 'new': b}
                                           for k, (a, b) in changes.items()}})
  writer = metrics.create_writer(workdir, is_main)
  cost = exp.cost()
  batch_size, opt = spec.data.batch_size, spec.optimizer
  progress = metrics.Progress(total, start, batch_size, enabled=is_main)
  progress.write(
      f'{spec.model.name}: {cost.params:,} params, {cost.macs:,} MACs/image'
      f' | {spec.data.source.label} {spec.data.train_split}: '
      f'{exp.info.num_train_examples:,} train, {spec.data.eval_split}: '
      f'{exp.info.num_eval_examples:,} eval | {jax.device_count()} device(s),'
      f' {jax.process_count()} process(es) | batch {batch_size}, '
      f'{exp.steps_per_epoch} steps/epoch, {total} steps | '
      f'{spec.model.dtype}, {opt.name} lr {opt.learning_rate:g} '
      f'{opt.schedule} | workdir {workdir}'
      + (f' | resuming at step {start}' if start else ''))

  loop = spec.loop
  eval_every = (max(1, round(loop.eval_every_epochs * exp.steps_per_epoch))
                if loop.eval_every_epochs > 0 else total)
  batches = data.train_batches(spec.data, start_step=start,
                               process_index=jax.process_index(),
                               process_count=jax.process_count())
  # pending: device metrics since the last event (log, eval or save);
  # log_window: host metrics since the last log, whatever happened between;
  # saved with each checkpoint, so that a resumed run logs what an
  # uninterrupted one logs.
  saved_log = meta.get('log', {})
  pending = []
  log_window = [(s, m) for s, m in saved_log.get('window', [])]
  window_start = time.perf_counter()
  window_steps, status = 0, 'done'
  log_steps = saved_log.get('steps', 0)
  log_seconds = saved_log.get('seconds', 0.0)
  wall_before = meta['wall_time_s']
  watch = _StuckWatch(exp.info.num_classes, spec.loop.stuck_windows)
  watch.count = saved_log.get('stuck_windows', 0)
  profile = _Profile(workdir, profile_steps, progress)

  def save(step):
    meta['wall_time_s'] = wall_before + time.perf_counter() - run_start
    meta['log'] = {'window': _saved_window(log_window), 'steps': log_steps,
                   'seconds': log_seconds, 'stuck_windows': watch.count}
    ckpt.save(step, state, meta)

  try:
    if signals.requested:  # during set-up: nothing new to save
      status, total = 'stopped', start
      progress.write(f'stopped by {signals.requested} before training; run '
                     'the same command to continue')
    for step in range(start, total):
      done = step + 1
      with profile.annotate(done):
        batch = sharding.global_batch(next(batches), exp.batch_sharding)
        state, step_metrics = exp.train_step(state, batch, exp.dropout_rng)
      window_start += profile.step_done(step_metrics)
      pending.append((done, step_metrics))
      window_steps += 1
      if step == start:  # Compilation is not training time.
        jax.block_until_ready(step_metrics)
        meta['compile_time_s'] = time.perf_counter() - window_start
        window_start, window_steps = time.perf_counter(), 0
        progress.start_clock(done)  # the ETA leaves compilation out
        profile.start(done)
      progress.update(done)
      stop = signals.reached(ckpt, done) or (
          stop_after_steps is not None and done - start >= stop_after_steps)
      is_log = done % loop.log_every_steps == 0 or done == total
      is_eval = done % eval_every == 0 or done == total
      is_ckpt = done % loop.checkpoint_every_steps == 0 or done == total
      if not (is_log or is_eval or is_ckpt or stop):
        continue
      pending = jax.device_get(pending)
      elapsed = time.perf_counter() - window_start
      meta['train_time_s'] += elapsed
      meta['timed_steps'] += window_steps
      log_seconds += elapsed
      log_steps += window_steps
      _check_finite(pending)
      log_window += pending
      if is_log:
        scalars = _window_means(log_window)
        scalars['train/epoch'] = done / exp.steps_per_epoch
        if log_steps:  # none when the window held only the compile step
          scalars['train/images_per_s'] = log_steps * batch_size / log_seconds
        writer.write_scalars(done, scalars)
        progress.log(done, scalars['train/loss'],
                     scalars.get('train/images_per_s', float('nan')))
        log_window, log_steps, log_seconds = [], 0, 0.0
        if watch.observe(scalars['train/loss'], scalars['train/grad_norm']):
          message = watch.message(done, scalars['train/loss'],
                                  scalars['train/grad_norm'])
          progress.write(f'warning: {message}')
          if is_main:
            metrics.append_record(metrics_path, {
                'step': done, 'warning': 'stuck', 'message': message})
          if spec.loop.stop_when_stuck:
            save(done)
            raise TrainingError(f'{message}; stopped (stop_when_stuck), the '
                                f'checkpoint at step {done} is kept')
      pending, window_steps = [], 0
      if is_eval:
        try:
          result = _evaluate_into(meta, exp, state)
        except BaseException:
          if is_ckpt or stop:  # a failed evaluation never costs the training
            # An earlier evaluation is not this step's: a resume evaluates.
            meta['final_eval'] = None
            save(done)
          raise
        # Wall time since the run first started (resumes included): the
        # x-axis of time-to-accuracy curves.
        top5 = ({'eval/top5_accuracy': result['top5_accuracy']}
                if result['top5_accuracy'] is not None else {})
        writer.write_scalars(done, {
            'eval/accuracy': result['accuracy'], 'eval/loss': result['loss'],
            **top5,
            'eval/wall_time_s': wall_before + time.perf_counter() - run_start})
        progress.write(f'step {done}: eval accuracy {result["accuracy"]:.4f},'
                       f' loss {result["loss"]:.4f}')
      writer.flush()
      if is_ckpt or stop:
        save(done)
      if stop and done < total:
        status = 'stopped'
        progress.write(f'stopped: saved a checkpoint at step {done}; run the '
                       'same command to continue')
        break
      window_start = time.perf_counter()
  finally:
    profile.close()  # a run that ended, or failed, before its last traced step
    progress.close()
    writer.close()
    ckpt.close()
    lock.close()

  step = int(jax.device_get(state.step))
  total = exp.total_steps
  if status == 'done' and meta['final_eval'] is None:
    # Resumed after the last checkpoint but before the summary was written.
    _evaluate_into(meta, exp, state)
  summary = {
      'status': status, 'step': step, 'total_steps': total,
      'model': spec.model.name, 'params': cost.params, 'macs': cost.macs,
      'final_eval_accuracy': (meta['final_eval'] or {}).get('accuracy'),
      'final_eval_top5_accuracy': (meta['final_eval'] or {}).get(
          'top5_accuracy'),
      'final_eval_loss': (meta['final_eval'] or {}).get('loss'),
      'best_eval_accuracy': meta['best_eval_accuracy'],
      'train_time_s': meta['train_time_s'],
      'wall_time_s': wall_before + time.perf_counter() - run_start,
      # Steady-state throughput: compilation steps are not timed.
      'images_per_s': (meta['timed_steps'] * batch_size /
                       meta['train_time_s'] if meta['timed_steps'] else None),
      'compile_time_s': meta.get('compile_time_s'),
      'seed': loop.seed, 'devices': jax.device_count(),
      'processes': jax.process_count(),
      **provenance.provenance(),
  }
  if is_main and status == 'done':
    workdir_lib.write_json(workdir_lib.path(workdir, workdir_lib.SUMMARY),
                           summary)
  logging.info('summary: %s', summary)
  if is_main and status == 'done':
    accuracy = summary['final_eval_accuracy']
    print(f'done: step {step}, eval accuracy {accuracy:.4f} on '
          f'{spec.data.eval_split}, {summary["wall_time_s"]:.0f} s wall time, '
          f'{summary["images_per_s"] or 0:.0f} images/s; {workdir}/'
          f'{workdir_lib.SUMMARY}', flush=True)
  return summary
