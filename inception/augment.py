"""How batches are made: decoding, conforming, ordering and augmentation.

`inception.data` decides what data (source, split); this module turns it into
batches. In-memory data uses batched numpy/TF ops driven by random parameters
drawn up front from numpy Generators seeded with (seed, epoch, step), so a
batch never depends on thread scheduling; streamed data uses per-example TF
stateless ops seeded with (seed, position).
"""

import collections
import concurrent.futures
import functools
import itertools
import math

import numpy as np
import tensorflow_datasets as tfds

from inception.tf_quiet import tf  # imported on first use

# ITU-R 601 luma weights; they sum to exactly 1 so grey->RGB->grey is lossless.
_LUMA = (0.299, 0.587, 0.114)
# Inception-style random-resized crop ranges.
_AREA = (0.08, 1.0)
_ASPECT = (3 / 4, 4 / 3)
_TRIES = 10
# ImageNet eval: the center crop covers 87.5% of the shorter side.
EVAL_CROP_FRACTION = 0.875
_SHUFFLE_BUFFER = 4096  # Streamed records, still encoded.


def _to_uint8(x):
  return tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8)


def to_channels(image, channels: int):
  """Converts the (static) channel count of a [..., C] uint8 image."""
  c = image.shape[-1]
  if c == channels:
    return image
  if c in (2, 4):  # Drop alpha.
    image, c = image[..., :c - 1], c - 1
  if c == channels:
    return image
  if c == 1 and channels == 3:
    return tf.tile(image, [1] * (image.shape.rank - 1) + [3])
  if c == 3 and channels == 1:
    grey = tf.reduce_sum(tf.cast(image, tf.float32) * _LUMA, -1, keepdims=True)
    return _to_uint8(grey)
  raise ValueError(f'cannot convert {c} channels to {channels}')


def conform(image, size: int, channels: int, crop_fraction: float = 1.0):
  """Returns uint8 `image` ([H,W,C] or [N,H,W,C]) as [..., size, size, C].

  Resizes (antialiased bilinear) so the shorter side is size / crop_fraction,
  then center-crops; images already at the target size are left untouched
  when crop_fraction is 1.

  Args:
    image: uint8 tensor or array with a static channel count.
    size: output height and width.
    channels: output channel count (1 or 3).
    crop_fraction: fraction of the shorter side kept by the center crop.

  Returns:
    A uint8 tensor.
  """
  image = to_channels(tf.convert_to_tensor(image), channels)
  shape = tf.shape(image)
  h, w = shape[-3], shape[-2]
  short = tf.cast(tf.minimum(h, w), tf.float32)
  target = float(math.ceil(size / crop_fraction))

  def scaled(side):
    side = tf.round(tf.cast(side, tf.float32) * target / short)
    return tf.maximum(size, tf.cast(side, tf.int32))

  def resize_crop():
    nh, nw = scaled(h), scaled(w)
    resized = _to_uint8(tf.image.resize(image, [nh, nw], antialias=True))
    y, x = (nh - size) // 2, (nw - size) // 2
    return resized[..., y:y + size, x:x + size, :]

  if crop_fraction == 1.0:
    same = tf.logical_and(tf.equal(h, size), tf.equal(w, size))
    out = tf.cond(same, lambda: image, resize_crop)
  else:
    out = resize_crop()
  return tf.ensure_shape(out, image.shape[:-3] + [size, size, channels])


def decode_files(files: np.ndarray, size: int, channels: int):
  """Decodes and conforms image files in parallel.

  Args:
    files: object array of paths.
    size: output height and width.
    channels: output channel count.

  Returns:
    (images uint8 [N, size, size, channels], ok bool [N]); files that are not
    decodable images have ok False and zero pixels.
  """
  n = len(files)
  images = np.zeros((n, size, size, channels), np.uint8)
  ok = np.zeros(n, bool)

  def one(path):
    image = tf.io.decode_image(tf.io.read_file(path), channels=3,
                               expand_animations=False)
    return conform(image, size, channels)

  def many(index, paths):  # Batching amortises tf.data's per-element cost.
    spec = tf.TensorSpec([size, size, channels], tf.uint8)
    return index, tf.map_fn(one, paths, fn_output_signature=spec,
                            parallel_iterations=16)

  ds = tf.data.Dataset.from_tensor_slices((np.arange(n), files)).batch(256)
  ds = ds.map(many, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
  for index, batch in ds.ignore_errors().as_numpy_iterator():
    images[index], ok[index] = batch, True
  # A bad file drops its whole batch; redo those one by one to find it.
  redo = np.flatnonzero(~ok)
  if redo.size:
    ds = tf.data.Dataset.from_tensor_slices((redo, files[redo]))
    ds = ds.map(lambda i, p: (i, one(p)), num_parallel_calls=tf.data.AUTOTUNE)
    for index, batch in ds.ignore_errors().batch(256).as_numpy_iterator():
      images[index], ok[index] = batch, True
  return images, ok


def conform_dataset(ds, size: int, channels: int):
  """Materialises a tf.data (image, label) dataset as conformed arrays."""
  ds = ds.map(lambda x, y: (conform(x, size, channels), tf.cast(y, tf.int32)),
              num_parallel_calls=tf.data.AUTOTUNE).batch(1024)
  images = [np.zeros((0, size, size, channels), np.uint8)]
  labels = [np.zeros(0, np.int32)]
  for x, y in ds.as_numpy_iterator():
    images.append(x)
    labels.append(y)
  return np.concatenate(images), np.concatenate(labels)


def mean_std(images: np.ndarray):
  """Exact per-channel mean/std of uint8 [..., C] images, via histograms."""
  c = images.shape[-1]
  flat = images.reshape(-1, c)
  hist = np.zeros((c, 256), np.int64)
  for i in range(0, len(flat), 1 << 24):  # Bounds the per-channel copies.
    for ch in range(c):
      hist[ch] += np.bincount(flat[i:i + (1 << 24), ch], minlength=256)
  values = np.arange(256, dtype=np.float64)
  count = np.maximum(hist.sum(1), 1)
  mean = hist @ values / count
  std = np.sqrt(np.maximum(hist @ values**2 / count - mean**2, 0.0))
  return tuple(float(m) for m in mean), tuple(float(s) for s in std)


# ----------------------------------------------------- in-memory augmentation


def sample_cifar(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
  """Draws [n, 3] (dy, dx, flip) parameters for `apply_cifar`."""
  pad = max(1, size // 8)
  return np.stack([rng.integers(0, 2 * pad + 1, n),
                   rng.integers(0, 2 * pad + 1, n),
                   rng.integers(0, 2, n)], axis=1)


def apply_cifar(images: np.ndarray, params: np.ndarray) -> np.ndarray:
  """Zero-pads by size // 8 (4 for 32px), random-crops back and maybe flips."""
  b, s = images.shape[:2]
  pad = max(1, s // 8)
  padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  ar = np.arange(s)
  rows = params[:, 0:1] + ar
  cols = params[:, 1:2] + ar
  # A flip is just reversed column indices, so crop and flip are one gather.
  cols = np.where(params[:, 2:3] == 1, cols[:, ::-1], cols)
  return padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def sample_inception(rng: np.random.Generator, n: int) -> np.ndarray:
  """Draws [n, 5] (y1, x1, y2, x2, flip) normalised crop boxes.

  Area 8%-100% and aspect 3/4-4/3 of a square image; the first of 10 tries
  that fits is kept, else the whole image.
  """
  area = rng.uniform(*_AREA, (n, _TRIES))
  aspect = np.exp(rng.uniform(*np.log(_ASPECT), (n, _TRIES)))
  w, h = np.sqrt(area * aspect), np.sqrt(area / aspect)
  fits = (w <= 1) & (h <= 1)
  first = np.argmax(fits, axis=1)
  rows = np.arange(n)
  w = np.where(fits.any(1), w[rows, first], 1.0)
  h = np.where(fits.any(1), h[rows, first], 1.0)
  y1 = rng.uniform(0, 1, n) * (1 - h)
  x1 = rng.uniform(0, 1, n) * (1 - w)
  flip = rng.integers(0, 2, n)
  return np.stack([y1, x1, y1 + h, x1 + w, flip], axis=1)


def apply_inception(images: np.ndarray, params: np.ndarray) -> np.ndarray:
  """Crops the boxes from `sample_inception`, resizes back and maybe flips."""
  b, s = images.shape[:2]
  out = tf.image.crop_and_resize(
      tf.cast(images, tf.float32), params[:, :4].astype(np.float32),
      tf.range(b), [s, s])
  out = tf.where(params[:, 4, None, None, None] == 1, out[:, :, ::-1], out)
  return _to_uint8(out).numpy()


def eval_center_crop(images: np.ndarray) -> np.ndarray:
  """ImageNet-style eval view of already conformed square images."""
  s, c = images.shape[1], images.shape[3]
  return conform(images, s, c, EVAL_CROP_FRACTION).numpy()


def train_view(kind: str, images, rng, global_batch: int, lo: int, hi: int):
  """Augments rows [lo, hi) of a global batch (given as `images`).

  Parameters are drawn for the whole global batch, so an example's
  augmentation doesn't depend on the process count.
  """
  if kind == 'cifar':
    params = sample_cifar(rng, global_batch, images.shape[1])
    return apply_cifar(images, params[lo:hi])
  if kind == 'imagenet':
    return apply_inception(images, sample_inception(rng, global_batch)[lo:hi])
  return images


def eval_view(kind: str, images: np.ndarray) -> np.ndarray:
  return eval_center_crop(images) if kind == 'imagenet' else images


# --------------------------------------------------------- in-memory batches


@functools.lru_cache(maxsize=4)
def permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  return np.random.default_rng([0, seed, epoch]).permutation(n)


@functools.cache
def _pool() -> concurrent.futures.ThreadPoolExecutor:
  # numpy gathers and TF ops release the GIL, so two threads overlap well.
  return concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix='data')


def _prefetch(make, steps):
  """Yields make(step) in order, computing a few steps ahead on threads."""
  steps = iter(steps)
  queue = collections.deque(
      _pool().submit(make, s) for s in itertools.islice(steps, 4))
  try:
    while queue:
      batch = queue.popleft().result()
      queue.extend(_pool().submit(make, s) for s in itertools.islice(steps, 1))
      yield batch
  finally:
    for future in queue:
      future.cancel()


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
    image = train_view(kind, images[idx], rng, batch, lo, lo + local)
    return {'image': image, 'label': labels[idx]}

  return _prefetch(make, itertools.count(start_step))


def memory_eval_batches(images, labels, kind: str, batch: int, lo: int,
                        local: int):
  """One pass in stored order; rows [lo, lo+local) of each global batch."""
  n = len(labels)

  def make(k):
    pos = np.arange(k * batch + lo, k * batch + lo + local)
    mask = pos < n
    idx = np.where(mask, pos, 0)
    image = eval_view(kind, images[idx])
    image[~mask] = 0
    return {'image': image, 'label': np.where(mask, labels[idx], 0),
            'mask': mask}

  return _prefetch(make, range(math.ceil(n / batch)))


# ------------------------------------------------------------ streamed (TF)


def _decode(encoded):
  return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def _stream_train(image, seed, size: int, channels: int, kind: str):
  """Per-example train transform with a stateless [2] int64 `seed`."""
  crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))
  if kind == 'imagenet':
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), tf.zeros([1, 0, 4]), seed=crop_seed,
        min_object_covered=0.0, aspect_ratio_range=_ASPECT,
        area_range=_AREA, max_attempts=_TRIES,
        use_image_if_no_bounding_boxes=True)
    channels_in = image.shape[-1]
    image = tf.slice(image, begin, extent)
    image.set_shape([None, None, channels_in])
    image = _to_uint8(tf.image.resize(image, [size, size], antialias=True))
    image = to_channels(image, channels)
  else:
    image = conform(image, size, channels)
    if kind == 'cifar':
      pad = max(1, size // 8)
      image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
      image = tf.image.stateless_random_crop(
          image, [size, size, channels], seed=crop_seed)
  if kind in ('imagenet', 'cifar'):
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
  return image


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
  resumes it; record i gets the stateless seed (seed, i), independent of
  thread timing.
  """
  first = start_step * local
  ds = _records(builder, spec, seed, process_index, process_count, True)
  buffer = max(1, min(_SHUFFLE_BUFFER, num_examples // process_count))
  ds = ds.repeat().shuffle(buffer, seed=seed).skip(first)

  def prep(i, example):
    encoded, label = example
    pair = tf.stack([tf.constant(seed, tf.int64),
                     i * process_count + process_index])
    image = _stream_train(_decode(encoded), pair, size, channels, kind)
    return {'image': image, 'label': tf.cast(label, tf.int32)}

  ds = ds.enumerate(first).map(prep, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.batch(local, drop_remainder=True).prefetch(2).as_numpy_iterator()


def stream_eval_batches(builder, spec: str, num_examples: int, kind: str,
                        size: int, channels: int, local: int,
                        process_index: int, process_count: int):
  """One pass over this process's shard of a TFDS split, mask-padded.

  Shards differ by at most one example; every process yields as many batches
  as the largest shard needs, so multi-host eval steps stay in lockstep.
  """
  steps = math.ceil(math.ceil(num_examples / process_count) / local)
  fraction = EVAL_CROP_FRACTION if kind == 'imagenet' else 1.0

  def prep(encoded, label):
    return {'image': conform(_decode(encoded), size, channels, fraction),
            'label': tf.cast(label, tf.int32), 'mask': tf.constant(True)}

  pad = tf.data.Dataset.from_tensors({
      'image': tf.zeros([size, size, channels], tf.uint8),
      'label': tf.constant(0), 'mask': tf.constant(False)}).repeat()
  ds = _records(builder, spec, 0, process_index, process_count, False)
  ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE).concatenate(pad)
  return ds.take(steps * local).batch(local).prefetch(2).as_numpy_iterator()
