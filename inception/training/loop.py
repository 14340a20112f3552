"""The training loop: ``train_and_evaluate(config, workdir)``.

Side effects (I/O, logging, checkpoints, signals) live here; the steps in
``inception.training.steps`` are pure and jit-compiled in ``inception.training.experiment``.

A run is a pure function of its config: the data order, augmentation and
dropout masks of step ``s`` depend only on ``config.seed`` and ``s``, so a
run resumed from a checkpoint continues exactly as if never stopped.
"""
import os
import signal
import threading
import time

import jax
from absl import logging

from inception import data, provenance
from inception.training import (checkpoint, evaluate, experiment, identity,
                                metrics, specs,
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
  signals = _Signals()
  try:
    return _train(config, workdir, stop_after_steps, signals, profile_steps)
  except RuntimeError as e:  # XLA's errors are RuntimeErrors
    if 'RESOURCE_EXHAUSTED' not in str(e):
      raise
    # The config passed specs.read: memory runs out only after it.
    size, batch = config.image_size, config.batch_size
    raise TrainingError(
        f'out of memory ({first_line(e)}) with batch_size {batch} and '
        f'{size}x{size} images; lower --config.batch_size (e.g. to '
        f'{max(1, batch // 2)}) or --config.image_size; the last checkpoint '
        'is kept') from None
  finally:
    signals.restore()


def _train(config, workdir, stop_after_steps, signals: _Signals,
           profile_steps: int = 0) -> dict:
  """``train_and_evaluate`` with its signal handlers installed."""
  run_start = time.perf_counter()  # wall time includes data loading and init
  spec = specs.read(config)  # the edge: below it, typed specs only
  workdir = workdir_lib.resolve(workdir)
  # The run's identity, config and data are checked before anything is
  # written.
  has_checkpoints = checkpoint.has_checkpoints(workdir)
  changes = identity.check_resume(spec.identity, workdir, has_checkpoints)
  exp = experiment.setup(spec)
  state, cost = exp.init_state(), exp.cost
  abstract_state = exp.abstract_state(state)
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
  restored = ckpt.restore_latest(abstract_state)
  if restored is not None:
    state, saved_meta = restored
    meta.update(saved_meta)
  wall_before, status = meta['wall_time_s'], 'done'

  def wall_time_s() -> float:  # since the run first started, resumes included
    return wall_before + time.perf_counter() - run_start

  def save(step):  # the state, and the log's meta (see ``TrainLog.saved``)
    ckpt.save(step, state, {**meta, 'wall_time_s': wall_time_s(),
                            **log.saved()})

  start = int(jax.device_get(state.step))
  total, loop = exp.total_steps, spec.loop
  if is_main:
    workdir_lib.write_json(workdir_lib.path(workdir, workdir_lib.CONFIG),
                           spec.identity)
  log = metrics.TrainLog(
      workdir, is_main=is_main, total=total, start=start,
      batch_size=spec.data.batch_size, steps_per_epoch=exp.steps_per_epoch,
      num_classes=exp.info.num_classes, stuck_windows=loop.stuck_windows,
      profile_steps=profile_steps, saved=meta, changes=changes)
  opt = spec.optimizer
  log.write(
      f'{spec.model.name}: {cost.params:,} params, {cost.macs:,} MACs/image'
      f' | {spec.data.source.label} {spec.data.train_split}: '
      f'{exp.info.num_train_examples:,} train, {spec.data.eval_split}: '
      f'{exp.info.num_eval_examples:,} eval | {jax.device_count()} device(s),'
      f' {jax.process_count()} process(es) | batch {spec.data.batch_size}, '
      f'{exp.steps_per_epoch} steps/epoch, {total} steps | '
      f'{spec.model.dtype}, {opt.name} lr {opt.learning_rate:g} '
      f'{opt.schedule} | workdir {workdir}'
      + (f' | resuming at step {start}' if start else ''))
  eval_every = (max(1, round(loop.eval_every_epochs * exp.steps_per_epoch))
                if loop.eval_every_epochs > 0 else total)
  batches = data.train_batches(spec.data, start_step=start,
                               process_index=jax.process_index(),
                               process_count=jax.process_count(),
                               sharding=exp.batch_sharding)
  try:
    if signals.requested:  # during set-up: nothing new to save
      status, total = 'stopped', start
      log.write(f'stopped by {signals.requested} before training; run the '
                'same command to continue')
    for step in range(start, total):
      done = step + 1
      # A step marker for the profiler's step-time views (free when off).
      with jax.profiler.StepTraceAnnotation('train', step_num=done):
        state, step_metrics = exp.train_step(state, next(batches),
                                             exp.dropout_rng)
      stop = signals.reached(ckpt, done) or (
          stop_after_steps is not None and done - start >= stop_after_steps)
      log.step(done, step_metrics, first=step == start)
      is_log = done % loop.log_every_steps == 0 or done == total
      is_eval = done % eval_every == 0 or done == total
      is_ckpt = done % loop.checkpoint_every_steps == 0 or done == total
      if not (is_log or is_eval or is_ckpt or stop):
        continue
      stuck = log.flush(done, is_log)
      if stuck and loop.stop_when_stuck:
        save(done)
        raise TrainingError(f'{stuck}; stopped (stop_when_stuck), the '
                            f'checkpoint at step {done} is kept')
      if is_eval:
        try:
          result = evaluate.run(exp, state)
        except BaseException:
          if is_ckpt or stop:  # a failed evaluation never costs the training
            # An earlier evaluation is not this step's: a resume evaluates.
            log.final_eval = None
            save(done)
          raise
        log.evaluation(done, result, wall_time_s())
      if is_ckpt or stop:
        save(done)
      if stop and done < total:
        status = 'stopped'
        log.write(f'stopped: saved a checkpoint at step {done}; run the '
                  'same command to continue')
        break
      log.restart_clock()
  finally:
    log.close()  # a profile still tracing stops here
    ckpt.close()
    lock.close()

  step = int(jax.device_get(state.step))
  total = exp.total_steps
  if status == 'done' and log.final_eval is None:
    # Resumed after the last checkpoint but before the summary was written.
    log.record_evaluation(evaluate.run(exp, state))
  final = log.final_eval or {}
  summary = {
      'status': status, 'step': step, 'total_steps': total,
      'model': spec.model.name, 'params': cost.params, 'macs': cost.macs,
      'final_eval_accuracy': final.get('accuracy'),
      'final_eval_top5_accuracy': final.get('top5_accuracy'),
      'final_eval_loss': final.get('loss'),
      'best_eval_accuracy': log.best_eval_accuracy,
      'train_time_s': log.train_time_s,
      'wall_time_s': wall_time_s(),
      # Steady-state throughput: compilation steps are not timed.
      'images_per_s': (log.timed_steps * spec.data.batch_size /
                       log.train_time_s if log.timed_steps else None),
      'compile_time_s': log.compile_time_s,
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
