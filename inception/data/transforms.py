"""Image transforms, each defined once: decoding, conforming, augmentation.

Every augmentation is a pair: ``sample_*`` draws its random parameters from a
numpy Generator, ``apply_*`` applies them to a batch. Both pipelines (in
memory and streamed, `inception.data.pipeline`) call the same pair, so a batch
depends only on the Generator's seed, never on thread scheduling.
"""

import concurrent.futures
import math
import os

import numpy as np

from inception.data import tf_quiet
from inception.data.tf_quiet import tf  # imported on first use

# ITU-R 601 luma weights; they sum to exactly 1 so grey->RGB->grey is lossless.
_LUMA = (0.299, 0.587, 0.114)
# Inception-style random-resized crop ranges.
_AREA = (0.08, 1.0)
_ASPECT = (3 / 4, 4 / 3)
_TRIES = 10
# ImageNet eval: the center crop covers 87.5% of the shorter side.
EVAL_CROP_FRACTION = 0.875


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
    A uint8 tensor; a numpy array where TensorFlow is not installed
    (``conform_array``) or where a numpy ``image`` is already conformed.
    ``np.array`` takes either.
  """
  if (isinstance(image, np.ndarray) and image.dtype == np.uint8
      and crop_fraction == 1.0 and image.shape[-3:] == (size, size, channels)):
    return image  # already conformed (the digits at 8x8): TF's import spared
  if not tf_quiet.available():
    return conform_array(np.asarray(image), size, channels, crop_fraction)
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


def conform_array(images: np.ndarray, size: int, channels: int,
                  crop_fraction: float = 1.0) -> np.ndarray:
  """``conform`` of a uint8 array without TensorFlow (JAX-only GPU images).

  ``jax.image.resize`` (on the host CPU) computes the same antialiased
  bilinear resize as TF's; rounding may differ by one level.
  """
  import jax  # pylint: disable=g-import-not-at-top
  c = images.shape[-1]
  if c in (2, 4):  # Drop alpha.
    images, c = images[..., :c - 1], c - 1
  if c == 1 and channels == 3:
    images = np.repeat(images, 3, axis=-1)
  elif c == 3 and channels == 1:
    images = np.round(images @ np.asarray(_LUMA)).clip(0, 255)[..., None]
  elif c != channels:
    raise ValueError(f'cannot convert {c} channels to {channels}')
  images = images.astype(np.uint8)
  h, w = images.shape[-3:-1]
  if crop_fraction == 1.0 and (h, w) == (size, size):
    return images
  target = float(math.ceil(size / crop_fraction))
  nh, nw = (max(size, round(side * target / min(h, w))) for side in (h, w))
  with jax.default_device(jax.local_devices(backend='cpu')[0]):
    resized = np.asarray(jax.image.resize(
        images.astype(np.float32), images.shape[:-3] + (nh, nw, channels),
        'linear', antialias=True))
  y, x = (nh - size) // 2, (nw - size) // 2
  out = np.clip(np.round(resized), 0, 255).astype(np.uint8)
  return out[..., y:y + size, x:x + size, :]


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
  if not tf_quiet.available():
    return _decode_files_pillow(files, size, channels)
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


def _decode_files_pillow(files: np.ndarray, size: int, channels: int):
  """`decode_files` with Pillow, for machines without TensorFlow.

  JAX-only GPU images often lack TensorFlow. Pixels can differ from TF's
  decoder by a level or two (another IDCT), and a resized image by more
  (Pillow's bilinear filter); same-size images are only decoded.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  n = len(files)
  images = np.zeros((n, size, size, channels), np.uint8)
  ok = np.zeros(n, bool)

  def one(i):
    try:
      with Image.open(files[i]) as im:
        im = im.convert('RGB')
        w, h = im.size
        if (w, h) != (size, size):
          scale = size / min(w, h)
          nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
          im = im.resize((nw, nh), Image.Resampling.BILINEAR)
          x, y = (nw - size) // 2, (nh - size) // 2
          im = im.crop((x, y, x + size, y + size))
        rgb = np.asarray(im, np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError):
      return
    if channels == 1:  # The same luma weights as the TF path.
      rgb = np.round(rgb @ np.asarray(_LUMA)).clip(0, 255)[..., None]
    images[i], ok[i] = rgb, True

  # Pillow releases the GIL while decoding.
  with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
    list(pool.map(one, range(n)))
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


def apply_inception(images, params, size: int):
  """Crops the boxes from `sample_inception`, resizes to size and maybe flips.

  Args:
    images: uint8 [B, H, W, C] (numpy, or a TF tensor inside tf.data, where
      H and W may differ from size: the crop is taken at full resolution).
    params: [B, 5] from `sample_inception`.
    size: output height and width.

  Returns:
    A uint8 [B, size, size, C] tensor.
  """
  out = tf.image.crop_and_resize(
      tf.cast(images, tf.float32), tf.cast(params[:, :4], tf.float32),
      tf.range(tf.shape(images)[0]), [size, size])
  out = tf.where(params[:, 4, None, None, None] == 1, out[:, :, ::-1], out)
  return _to_uint8(out)


def eval_center_crop(images: np.ndarray) -> np.ndarray:
  """ImageNet-style eval view of already conformed square images."""
  s, c = images.shape[1], images.shape[3]
  return np.array(conform(images, s, c, EVAL_CROP_FRACTION))  # writable


def train_view(kind: str, images, rng, global_batch: int, lo: int, hi: int):
  """Augments rows [lo, hi) of a global batch (given as `images`).

  Parameters are drawn for the whole global batch, so an example's
  augmentation doesn't depend on the process count.
  """
  if kind == 'cifar':
    params = sample_cifar(rng, global_batch, images.shape[1])
    return apply_cifar(images, params[lo:hi])
  if kind == 'imagenet':
    params = sample_inception(rng, global_batch)[lo:hi]
    return apply_inception(images, params, images.shape[1]).numpy()
  return images


def eval_view(kind: str, images: np.ndarray) -> np.ndarray:
  return eval_center_crop(images) if kind == 'imagenet' else images
