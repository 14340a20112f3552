"""RandAugment (Cubuk et al. 2019) on device, one image at a time under vmap.

The op set and magnitude ranges are timm's "increasing" RandAugment
(``rand-m{M}-n{N}-inc1``): each op's strength grows with the magnitude M on
timm's 0-10 scale, each of the N ops an image gets is drawn uniformly from
the 15 below, and each applies with probability 0.5 (timm's default).
Geometric ops fill with grey (128) as timm does. Pixels are float32 on
[0, 255] and are rounded and clipped after every op, as timm's PIL images
are. Affine resampling is dm_pix's (bilinear), not PIL's.

It runs inside the jit-compiled train step: both input pipelines get the
same augmentation, and its key is a function of the seed and the step, so a
resumed run draws the same ops.
"""
import jax
import jax.numpy as jnp
import dm_pix

_FILL = 128.0  # timm's default fill for pixels from outside the image
_OP_PROB = 0.5  # each drawn op applies with this probability
_MAX_LEVEL = 10.0  # magnitudes are on timm's 0-10 scale


def _luma(x):
  """Rec. 601 grey in whole levels, [H, W, 1], as PIL's 'L' mode."""
  if x.shape[-1] == 1:
    return x
  return jnp.round(dm_pix.rgb_to_grayscale(x, keep_dims=True))


def _blend(degenerate, x, factor):
  """PIL's ImageEnhance: factor 0 is the degenerate image, 1 the image.

  Truncated to whole levels, as PIL's blend does.
  """
  return jnp.floor(degenerate + factor * (x - degenerate))


def _affine(x, matrix, offset):
  return dm_pix.affine_transform(x, matrix, offset=offset, order=1,
                                 mode='constant', cval=_FILL)


def _auto_contrast(x, level, sign):
  del level, sign
  lo = x.min(axis=(0, 1), keepdims=True)
  hi = x.max(axis=(0, 1), keepdims=True)
  scale = jnp.where(hi > lo, 255.0 / jnp.maximum(hi - lo, 1e-6), 1.0)
  return jnp.where(hi > lo, jnp.floor((x - lo) * scale), x)  # PIL truncates


def _equalize_channel(c):
  """PIL's ImageOps.equalize of one [H, W] channel with integer values."""
  v = c.astype(jnp.int32)
  hist = jnp.bincount(v.ravel(), length=256)
  step = (hist.sum() - hist[v.max()]) // 255  # the top bin is left out
  before = jnp.cumsum(hist) - hist  # pixels in the bins below each bin
  lut = jnp.clip((before + step // 2) // jnp.maximum(step, 1), 0, 255)
  return jnp.where(step > 0, lut[v].astype(c.dtype), c)


def _equalize(x, level, sign):
  del level, sign
  return jax.vmap(_equalize_channel, in_axes=-1, out_axes=-1)(x)


def _invert(x, level, sign):
  del level, sign
  return 255.0 - x


def _rotate(x, level, sign):
  degrees = sign * level / _MAX_LEVEL * 30.0
  return dm_pix.rotate(x, jnp.deg2rad(degrees), order=1, mode='constant',
                       cval=_FILL)


def _posterize(x, level, sign):
  del sign
  bits = 4 - jnp.floor(level / _MAX_LEVEL * 4)  # bits kept: 4 down to 0
  q = 2.0**(8 - bits)
  return jnp.floor(x / q) * q


def _solarize(x, level, sign):
  del sign
  threshold = 256.0 - level / _MAX_LEVEL * 256.0
  return jnp.where(x >= threshold, 255.0 - x, x)


def _solarize_add(x, level, sign):
  del sign
  add = jnp.floor(level / _MAX_LEVEL * 110.0)
  return jnp.where(x < 128.0, jnp.minimum(x + add, 255.0), x)


def _factor(level, sign):
  return 1.0 + sign * level / _MAX_LEVEL * 0.9


def _color(x, level, sign):
  return _blend(_luma(x), x, _factor(level, sign))


def _contrast(x, level, sign):
  return _blend(jnp.floor(jnp.mean(_luma(x)) + 0.5), x, _factor(level, sign))


def _brightness(x, level, sign):
  return _blend(jnp.zeros_like(x), x, _factor(level, sign))


def _sharpness(x, level, sign):
  """PIL's SMOOTH-filtered image as the degenerate one, borders unchanged."""
  kernel = jnp.array([[1., 1., 1.], [1., 5., 1.], [1., 1., 1.]]) / 13.0
  smooth = jax.lax.conv_general_dilated(
      x.transpose(2, 0, 1)[:, None], kernel[None, None], (1, 1), 'VALID',
      precision=jax.lax.Precision.HIGHEST)[:, 0].transpose(1, 2, 0)
  degenerate = x.at[1:-1, 1:-1].set(jnp.round(smooth))
  return _blend(degenerate, x, _factor(level, sign))


def _shear(axis):
  def op(x, level, sign):
    s = sign * level / _MAX_LEVEL * 0.3
    m = jnp.eye(3)
    # Pull resampling in (row, col, channel): the input column is
    # col + s * row for a horizontal shear, as PIL's (1, s, 0, 0, 1, 0).
    m = m.at[1, 0].set(s) if axis == 'x' else m.at[0, 1].set(s)
    return _affine(x, m, 0.0)
  return op


def _translate(axis):
  def op(x, level, sign):
    size = x.shape[1] if axis == 'x' else x.shape[0]
    pixels = sign * level / _MAX_LEVEL * 0.45 * size
    offset = (jnp.array([0.0, 1.0, 0.0]) if axis == 'x'
              else jnp.array([1.0, 0.0, 0.0])) * pixels
    return _affine(x, jnp.eye(3), offset)
  return op


# Name -> op(x [H, W, C] on [0, 255], level, sign ±1): timm's list, in order.
OPS = {
    'AutoContrast': _auto_contrast, 'Equalize': _equalize, 'Invert': _invert,
    'Rotate': _rotate, 'Posterize': _posterize, 'Solarize': _solarize,
    'SolarizeAdd': _solarize_add, 'Color': _color, 'Contrast': _contrast,
    'Brightness': _brightness, 'Sharpness': _sharpness,
    'ShearX': _shear('x'), 'ShearY': _shear('y'),
    'TranslateXRel': _translate('x'), 'TranslateYRel': _translate('y'),
}
_BRANCHES = tuple(OPS.values())


def _one(key, image, num_ops: int, magnitude: float):
  x = image
  for key in jax.random.split(key, num_ops):
    k_op, k_apply, k_sign = jax.random.split(key, 3)
    index = jax.random.randint(k_op, (), 0, len(_BRANCHES))
    sign = jnp.where(jax.random.bernoulli(k_sign), 1.0, -1.0)
    y = jax.lax.switch(index, _BRANCHES, x, jnp.float32(magnitude), sign)
    y = jnp.clip(jnp.round(y), 0.0, 255.0)
    x = jnp.where(jax.random.bernoulli(k_apply, _OP_PROB), y, x)
  return x


def randaugment(key, images, num_ops: int, magnitude: float):
  """RandAugment of a batch.

  Args:
    key: a PRNG key; image i draws from ``fold_in(key, i)``, so an image's ops
      depend on its row, not on how the batch is split over devices.
    images: [B, H, W, C] pixels on [0, 255] (uint8 or float), C = 1 or 3.
    num_ops: ops drawn per image (timm's N).
    magnitude: strength on timm's 0-10 scale (timm's M).

  Returns:
    float32 [B, H, W, C] on [0, 255].
  """
  images = images.astype(jnp.float32)
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(
      jnp.arange(images.shape[0]))
  return jax.vmap(lambda k, x: _one(k, x, num_ops, magnitude))(keys, images)
