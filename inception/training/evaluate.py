"""Evaluation: one pass over a split, and re-evaluation of a saved checkpoint."""
import os
import time

import jax
import numpy as np
from absl import logging

from inception import data
from inception.data import sources
from inception.training import (checkpoint, experiment, identity,
                                specs, workdir as workdir_lib)
from inception.errors import UserError


def run(exp: experiment.Experiment, state, split: str | None = None) -> dict:
  """Accuracy and loss of ``state`` on ``split`` (default: the eval split).

  Every example counts exactly once: the last batch is padded and masked.

  Returns:
    ``accuracy``, ``top5_accuracy`` (None with 5 classes or fewer),
    ``loss``, ``num_examples``, ``per_class_accuracy`` (a list
    indexed by class; None for a class the split does not hold), ``seconds`` and ``images_per_s`` (both excluding the
    first batch, which includes compilation).
  """
  sums, timed_examples = None, 0
  for batch in data.eval_batches(exp.specs.data, split,
                                 process_index=jax.process_index(),
                                 process_count=jax.process_count(),
                                 sharding=exp.batch_sharding):
    out = exp.eval_step(state, batch)
    if sums is None:
      sums = jax.block_until_ready(out)
      start = time.perf_counter()
    else:
      sums = jax.tree.map(lambda a, b: a + b, sums, out)
      timed_examples += exp.specs.data.batch_size
  if sums is None:
    raise UserError(
        f'eval split {split or exp.specs.data.eval_split!r} is empty')
  sums = jax.tree.map(np.asarray, jax.device_get(sums))
  seconds = time.perf_counter() - start
  count = float(sums['count'])
  # A class with no example in the split has no accuracy: None, not 0.
  per_class = [float(c / n) if n else None for c, n in
               zip(sums['class_correct'], sums['class_count'])]
  num_classes = len(sums['class_count'])
  return {
      'accuracy': float(sums['correct']) / count,
      # GoogLeNet's ImageNet metric; with 5 classes or fewer it is always 1.
      'top5_accuracy': (float(sums['correct_top5']) / count
                        if num_classes > 5 else None),
      'loss': float(sums['loss']) / count,
      'num_examples': int(count),
      'per_class_accuracy': per_class,
      'seconds': seconds,
      'images_per_s': timed_examples / seconds if timed_examples else None,
  }


def restore_run(config, workdir: str, step: int | None = None):
  """``(experiment, state)`` of a run's latest (or ``step``) checkpoint.

  Read-only: safe while the run is still training in ``workdir``.

  Raises:
    UserError: ``config`` keeps an EMA of the weights and the run did not,
      or the other way round (the checkpoints hold what training kept).
  """
  if os.path.exists(workdir_lib.path(workdir, workdir_lib.CONFIG)):
    kept = workdir_lib.load_config(workdir).ema_decay > 0
    asked = config.get('ema_decay', 0.0)
    if kept != (asked > 0):
      raise UserError(
          f'{workdir} was trained {"with" if kept else "without"} an EMA of '
          f'the weights; ema_decay={asked} cannot change that at evaluation: '
          'drop --config.ema_decay')
  exp = experiment.setup(specs.read(config))
  state, _ = checkpoint.read(workdir, exp.abstract_state(), step,
                             exp.specs.model)
  return exp, state


def evaluate_checkpoint(config, workdir: str, step: int | None = None,
                        split: str | None = None) -> dict:
  """Restores ``workdir``'s checkpoint (latest or ``step``) and evaluates it.

  Writes ``workdir/eval.json`` and returns the same dict, which adds
  ``step``, ``split``, ``params``, ``macs`` and ``overrides`` (each config
  field this evaluation changed from the run's saved config, e.g.
  ``eval_flip``: {'saved': ..., 'used': ...}) and ``train_overlap`` (where
  the evaluated split overlaps the run's training split, e.g.
  'train[0%:10%]', with a warning; None when it does not or cannot be
  told) to ``run``'s metrics. A workdir that cannot be written (a read-only
  mount) still gets its result, with a warning that eval.json was not saved.
  """
  workdir = workdir_lib.resolve(workdir)
  exp, state = restore_run(config, workdir, step)
  evaluated = split or exp.specs.data.eval_split
  trained = _trained_split(exp, workdir)
  overlap = train_overlap(exp, trained, evaluated)
  if overlap:
    logging.warning('eval split %r overlaps the run\'s training split %r in '
                    '%s: the run trained on those examples, so this accuracy '
                    'is not a held-out one', evaluated, trained, overlap)
  metrics = run(exp, state, split)
  cost = exp.cost
  result = {'step': int(jax.device_get(state.step)),
            'split': split or exp.specs.data.eval_split, **metrics,
            'params': cost.params, 'macs': cost.macs,
            'class_names': list(exp.info.class_names),
            'overrides': _overrides(exp.specs.identity, workdir),
            'train_overlap': overlap or None}
  if jax.process_index() == 0:
    file = workdir_lib.path(workdir, workdir_lib.EVAL)
    try:
      workdir_lib.write_json(file, result)
    except OSError as e:
      logging.warning('could not save %s (%s); the result is printed only',
                      file, e.strerror)
  return result


def _trained_split(exp, workdir: str) -> str | None:
  """The split the run trained on: its saved config's; None: another dataset.

  ``exp``'s own train split when the workdir has no config.json.
  """
  file = workdir_lib.path(workdir, workdir_lib.CONFIG)
  if not os.path.exists(file):
    return exp.specs.data.train_split
  saved = workdir_lib.read_config(file)
  if saved.get('dataset') != exp.specs.identity.get('dataset'):
    return None  # slices of different datasets do not overlap
  return str(saved.get('train_split', exp.specs.data.train_split))


def train_overlap(exp, trained: str | None, split: str) -> str:
  """Where ``split`` overlaps ``trained`` (``sources.split_overlap``).

  '' when they are disjoint, ``trained`` is None (another dataset), or it
  cannot be told.
  """
  if not trained or not split:
    return ''
  sizes = sources.split_sizes(exp.specs.data, trained, split)
  return sources.split_overlap(trained, split, sizes)


def _overrides(requested: dict, workdir: str) -> dict:
  """field -> {'saved', 'used'} where ``requested`` differs from the run's own."""
  file = workdir_lib.path(workdir, workdir_lib.CONFIG)
  if not os.path.exists(file):
    return {}
  diff = identity.differences(workdir_lib.read_config(file), requested)
  return {k: {'saved': a, 'used': b} for k, (a, b) in diff.items()}


def format_result(result: dict) -> str:
  """A human-readable report of ``evaluate_checkpoint``'s result."""
  lines = [
      f"step {result['step']} on {result['split']}: accuracy "
      f"{result['accuracy']:.4f}"
      + (f", top-5 {result['top5_accuracy']:.4f}"
         if result.get('top5_accuracy') is not None else '')
      + f", loss {result['loss']:.4f} over {result['num_examples']:,} "
      'examples',
      f"params {result['params']:,}, MACs/image {result['macs']:,}, "
      f"{result['images_per_s'] or float('nan'):.0f} images/s",
      'per-class accuracy:',
  ]
  lines += [f'  {name:>12s}  ' + ('absent' if acc is None else f'{acc:.4f}')
            for name, acc in zip(result['class_names'],
                                 result['per_class_accuracy'])]
  if result.get('overrides'):
    lines.append('changed from the run\'s config: ' + ', '.join(
        f'{k}={v["used"]!r} (trained with {v["saved"]!r})'
        for k, v in result['overrides'].items()))
  return '\n'.join(lines)
