"""Batches: ordering, augmentation and prefetching of a located split.

In-memory data is a Grain MapDataset indexed by step: element s is the
batch of step s, made from a permutation and augmentation parameters seeded
with (seed, epoch, offset), so resuming at step s computes only what it
yields and the bits never depend on thread scheduling. Grain's threads
prefetch ahead of the training step. Streamed data (TFDS too large for
memory) goes through a seeded, deterministic tf.data reader; its
augmentation parameters are drawn per record from (seed, position).
Both call the same transforms (`inception.data.transforms`).
"""

import functools
import math

import grain
import numpy as np
import tensorflow_datasets as tfds

from inception.data import transforms
from inception.data.tf_quiet import tf  # imported on first use

_SHUFFLE_BUFFER = 4096  # Streamed records, still encoded.
# numpy gathers and TF ops release the GIL, so two threads overlap well.
_READ = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)
_UNBOUNDED = 1 << 62  # Steps of the infinite train stream.


# --------------------------------------------------------- in-memory batches


@functools.lru_cache(maxsize=4)
def permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  return np.random.default_rng([0, seed, epoch]).permutation(n)


def _prefetched(make, start: int, stop: int):
  """Iterator over make(start), ..., make(stop - 1), computed ahead."""
  steps = grain.MapDataset.range(start, stop).map(make)
  return iter(steps.to_iter_dataset(_READ))


def memory_train_batches(images, labels, kind: str, seed: int, batch: int,
                         lo: int, local: int, start_step: int):
  """Infinite train batches (rows [lo, lo+local) of each global batch).

  Step s is batch s % steps_per_epoch of epoch s // steps_per_epoch (the
  remainder of each epoch is dropped); order and augmentation depend only on
  (seed, epoch, offset), so starting at `start_step` skips without work.
  """
  n = len(labels)
  steps_per_epoch = n // batch

  def make(step):
    epoch, offset = divmod(step, steps_per_epoch)
    idx = permutation(seed, epoch, n)[offset * batch:(offset + 1) * batch]
    idx = idx[lo:lo + local]
    rng = np.random.default_rng([1, seed, epoch, offset])
    image = transforms.train_view(kind, images[idx], rng, batch, lo,
                                  lo + local)
    return {'image': image, 'label': labels[idx]}

  return _prefetched(make, start_step, _UNBOUNDED)


def memory_eval_batches(images, labels, kind: str, batch: int, lo: int,
                        local: int):
  """One pass in stored order; rows [lo, lo+local) of each global batch."""
  n = len(labels)

  def make(k):
    pos = np.arange(k * batch + lo, k * batch + lo + local)
    mask = pos < n
    idx = np.where(mask, pos, 0)
    image = transforms.eval_view(kind, images[idx])
    image[~mask] = 0
    return {'image': image, 'label': np.where(mask, labels[idx], 0),
            'mask': mask}

  return _prefetched(make, 0, math.ceil(n / batch))


# ------------------------------------------------------------ streamed (TF)


def _decode(encoded):
  return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def _records(builder, spec, seed, process_index, process_count, train):
  """This process's shard of a TFDS split as (encoded image, label)."""
  split = spec if process_count == 1 else tfds.split_for_jax_process(
      spec, process_index=process_index, process_count=process_count,
      drop_remainder=train)
  options = tf.data.Options()
  options.deterministic = True
  # Images stay encoded through shuffle/skip, so resuming decodes nothing
  # that it skips.
  skip = {builder.info.supervised_keys[0]: tfds.decode.SkipDecoding()}
  return builder.as_dataset(
      split=split, shuffle_files=train, as_supervised=True, decoders=skip,
      read_config=tfds.ReadConfig(shuffle_seed=seed, options=options))


def stream_train_batches(builder, spec: str, num_examples: int, kind: str,
                         size: int, channels: int, local: int, seed: int,
                         start_step: int, process_index: int,
                         process_count: int):
  """Infinite augmented batches of this process's shard of a TFDS split.

  A seeded, deterministic pipeline, so skipping start_step * local records
  resumes it. Augmentation parameters come from numpy Generators seeded with
  (seed, record) for the Inception crop, which is taken per record at full
  resolution, and (seed, step, process) for the CIFAR crop, applied to the
  whole batch; neither depends on thread timing.
  """
  first = start_step * local
  ds = _records(builder, spec, seed, process_index, process_count, True)
  buffer = max(1, min(_SHUFFLE_BUFFER, num_examples // process_count))
  ds = ds.repeat().shuffle(buffer, seed=seed).skip(first)

  def inception_params(position):
    rng = np.random.default_rng([2, seed, int(position)])
    return transforms.sample_inception(rng, 1)

  def prep(i, example):
    encoded, label = example
    image = _decode(encoded)
    if kind == 'imagenet':
      params = tf.numpy_function(
          inception_params, [i * process_count + process_index], tf.float64)
      params = tf.ensure_shape(params, [1, 5])
      image = transforms.apply_inception(image[None], params, size)[0]
      image = transforms.to_channels(image, channels)
    else:
      image = transforms.conform(image, size, channels)
    return {'image': image, 'label': tf.cast(label, tf.int32)}

  def cifar(step, images):
    rng = np.random.default_rng([3, seed, int(step), process_index])
    return transforms.apply_cifar(
        images, transforms.sample_cifar(rng, len(images), size))

  def augment_batch(step, batch):
    image = tf.numpy_function(cifar, [step, batch['image']], tf.uint8)
    return {**batch, 'image': tf.ensure_shape(image, batch['image'].shape)}

  ds = ds.enumerate(first).map(prep, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local, drop_remainder=True)
  if kind == 'cifar':
    ds = ds.enumerate(start_step).map(augment_batch,
                                      num_parallel_calls=tf.data.AUTOTUNE)
  return ds.prefetch(2).as_numpy_iterator()


def stream_eval_batches(builder, spec: str, num_examples: int, kind: str,
                        size: int, channels: int, local: int,
                        process_index: int, process_count: int):
  """One pass over this process's shard of a TFDS split, mask-padded.

  Shards differ by at most one example; every process yields as many batches
  as the largest shard needs, so multi-host eval steps stay in lockstep.
  """
  steps = math.ceil(math.ceil(num_examples / process_count) / local)
  fraction = transforms.EVAL_CROP_FRACTION if kind == 'imagenet' else 1.0

  def prep(encoded, label):
    return {'image': transforms.conform(_decode(encoded), size, channels,
                                        fraction),
            'label': tf.cast(label, tf.int32), 'mask': tf.constant(True)}

  pad = tf.data.Dataset.from_tensors({
      'image': tf.zeros([size, size, channels], tf.uint8),
      'label': tf.constant(0), 'mask': tf.constant(False)}).repeat()
  ds = _records(builder, spec, 0, process_index, process_count, False)
  ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE).concatenate(pad)
  return ds.take(steps * local).batch(local).prefetch(2).as_numpy_iterator()
