"""The data API: a parsed `DataSpec` -> dataset info and batches.

Batches are this host's slice as numpy arrays, or, given a ``sharding``,
global ``jax.Array``s over every device of every process (as big_vision's
input pipeline hands the trainer global arrays).

`parse(config)` reads and checks the config's data fields once (see
`inception.data.sources` for what `config.dataset` may name); everything else
takes the resulting `DataSpec`. The train stream is a pure function of
(seed, step): `train_batches(spec, start_step=s)` yields exactly the tail of
a fresh stream.
"""

import dataclasses
import functools
from typing import Iterator

import jax
import numpy as np

from inception.data import pipeline, sources, transforms
from inception.errors import UserError
from inception.data.sources import DataSpec, parse  # pylint: disable=unused-import

_IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
_IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  num_classes: int
  class_names: tuple[str, ...]
  image_shape: tuple[int, int, int]  # (image_size, image_size, channels)
  num_train_examples: int
  num_eval_examples: int
  mean: tuple[float, ...]  # Per channel, on the [0, 255] scale.
  std: tuple[float, ...]


@functools.lru_cache(maxsize=4)
def _train_stats(key):
  return transforms.mean_std(sources.load_memory(key)[0])


def get_info(spec: DataSpec) -> DatasetInfo:
  """Describes the dataset `spec` selects (loading it if in-memory)."""
  c = spec.source
  train = sources.open_split(spec, spec.train_split)
  if not train.num_examples:
    raise UserError(f'train split {spec.train_split!r} is empty; '
                    f'{sources.SPLIT_HINT}')
  n_eval = (sources.open_split(spec, spec.eval_split).num_examples
            if spec.eval_split else 0)
  if train.key:
    mean, std = _train_stats(train.key)
  elif c.channels == 3:  # Too big to scan: the well-known ImageNet values.
    mean, std = _IMAGENET_MEAN, _IMAGENET_STD
  else:
    luma = (0.299, 0.587, 0.114)
    mean = (float(np.dot(luma, _IMAGENET_MEAN)),)
    std = (float(np.dot(luma, _IMAGENET_STD)),)
  names = sources.class_names(c, spec.train_split)
  return DatasetInfo(len(names), names, (c.size, c.size, c.channels),
                     train.num_examples, n_eval, mean, std)


def steps_per_epoch(spec: DataSpec, num_train_examples: int) -> int:
  """Full global batches per epoch; UserError when there is none."""
  if spec.batch_size > num_train_examples:
    raise UserError(f'batch_size {spec.batch_size} is larger than the train '
                    f'split {spec.train_split!r} ({num_train_examples} '
                    'examples); lower --config.batch_size')
  return num_train_examples // spec.batch_size


def clear_caches():
  """Drops every cached array and builder (e.g. between tests)."""
  sources.clear_caches()
  for fn in (_train_stats, pipeline.permutation):
    fn.cache_clear()


def _local_batch(spec: DataSpec, process_index: int, process_count: int):
  b = spec.batch_size
  if process_count <= 0 or not 0 <= process_index < process_count:
    raise UserError(f'process_index {process_index} is out of range for '
                    f'process_count {process_count}')
  if b <= 0 or b % process_count:
    raise UserError(f'batch_size {b} must be a positive multiple of the '
                    f'process count {process_count}; change '
                    '--config.batch_size')
  return b // process_count


def global_batch(local: dict, sharding: jax.sharding.Sharding) -> dict:
  """Assembles each process's slice of a batch into global jax.Arrays."""
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in local.items()}


def _on_devices(batches: Iterator[dict], sharding) -> Iterator[dict]:
  for local in batches:
    yield global_batch(local, sharding)


def train_batches(spec: DataSpec, *, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1,
                  sharding: jax.sharding.Sharding | None = None
                  ) -> Iterator[dict]:
  """Infinite train stream for this process, starting at `start_step`.

  Step s is batch s % steps_per_epoch of epoch s // steps_per_epoch, whose
  order and augmentation depend only on (spec.seed, epoch, offset), so
  resuming computes only what it yields. Process p gets slice p of each
  global batch (in-memory) or its own shard (streamed).

  Returns:
    Iterator of {'image': uint8 [B/P, H, W, C], 'label': int32 [B/P]}; with
    a ``sharding``, of global batches [B, ...] laid out by it.
  """
  if sharding is not None:
    return _on_devices(train_batches(
        spec, start_step=start_step, process_index=process_index,
        process_count=process_count), sharding)
  c, local = spec.source, _local_batch(spec, process_index, process_count)
  split = sources.open_split(spec, spec.train_split)
  if split.builder:
    return pipeline.stream_train_batches(
        split.builder, split.spec, split.num_examples, spec.augment, c.size,
        c.channels, local, spec.seed, int(start_step), process_index,
        process_count)
  steps_per_epoch(spec, split.num_examples)
  images, labels = sources.load_memory(split.key)
  return pipeline.memory_train_batches(
      images, labels, spec.augment, spec.seed, spec.batch_size,
      process_index * local, local, int(start_step))


def eval_batches(spec: DataSpec, split: str | None = None, *,
                 process_index: int = 0, process_count: int = 1,
                 sharding: jax.sharding.Sharding | None = None
                 ) -> Iterator[dict]:
  """One pass over `split` (default spec.eval_split), padded to full batches.

  Returns:
    Iterator of {'image': uint8 [B/P, H, W, C], 'label': int32 [B/P],
    'mask': bool [B/P]}, mask False on padding. Process p gets slice p of
    every global batch (in-memory) or its own shard (streamed). With a
    ``sharding``, global batches [B, ...] laid out by it.
  """
  if sharding is not None:
    return _on_devices(eval_batches(spec, split, process_index=process_index,
                                    process_count=process_count), sharding)
  c, local = spec.source, _local_batch(spec, process_index, process_count)
  name = split or spec.eval_split
  if not name:
    raise UserError('no eval split given; set --config.eval_split '
                    '(e.g. test or train[90%:])')
  located = sources.open_split(spec, name)
  if located.builder:
    return pipeline.stream_eval_batches(
        located.builder, located.spec, located.num_examples, spec.augment,
        c.size, c.channels, local, process_index, process_count)
  images, labels = sources.load_memory(located.key)
  return pipeline.memory_eval_batches(images, labels, spec.augment,
                                      spec.batch_size, process_index * local,
                                      local)
