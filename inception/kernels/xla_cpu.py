"""Kernels written for XLA:CPU: im2col convolutions, shifted-sum depthwise, max
pool, and channel concat/split that move bf16 as bits.

On XLA:CPU a convolution runs at a fraction of GEMM speed, most of all its
weight gradient, and a max pool's gradient goes through select_and_scatter,
which is several times slower than the pool itself. These formulations give
the same numbers as XLA's own ops up to float rounding, max-pool gradients
included, ties too (``tests/test_conv_ops.py``); ``inception.kernels.backend``
decides where each runs.
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from inception.kernels import gemm, onednn

def _pads(x_shape, k: int, strides: int, padding):
  if isinstance(padding, str):
    return lax.padtype_to_pads(x_shape[1:3], (k, k), (strides, strides),
                               padding)
  return tuple(tuple(p) for p in padding)


@jax.named_scope('im2col')
def conv_gemm(x, kernel, strides: int, padding, compute_dtype=None):
  """NHWC x HWIO convolution as im2col + one matrix multiply (``gemm.matmul``).

  The patches are gathered in x's dtype; the GEMM casts them to
  ``compute_dtype``. Its input gradient comes back as one GEMM and the
  col2im is the transpose of the slices: a sum of shifted pads XLA fuses.
  """
  k, _, cin, cout = kernel.shape
  (pt, pb), (pl, pr) = _pads(x.shape, k, strides, padding)
  x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  n, h, w, _ = x.shape
  ho, wo = (h - k) // strides + 1, (w - k) // strides + 1
  patches = jnp.concatenate([
      x[:, i:i + strides * (ho - 1) + 1:strides,
        j:j + strides * (wo - 1) + 1:strides, :]
      for i in range(k) for j in range(k)], axis=-1)
  return gemm.matmul(patches, kernel.reshape(k * k * cin, cout),
                     compute_dtype)


def im2col_pays(x_shape, kernel_shape) -> bool:
  """Whether im2col beats XLA's convolution on CPU for this layer.

  The rule ``benchmarks/conv_impl.py`` measured (forward + backward; figures
  in ``benchmarks/README.md``): XLA's convolution is weakest with very few
  input channels (the stem), for 3x3 layers with 32 or more, and for 3x3
  layers with 16 or more at 32x32 and above; im2col loses on 5x5 layers whose
  patch matrix grows past 800 columns, and on narrow outputs.
  """
  k, _, cin, cout = kernel_shape
  if k <= 3:
    return cin <= 8 or cin >= 32 or (cin >= 16 and x_shape[1] >= 32)
  return k * k * cin <= 800 and cout >= 64


def depthwise_shifted(x, kernel, strides: int, padding):
  """Depthwise NHWC x (k, k, 1, C) convolution as a sum of k*k shifted products.

  Each tap is one elementwise multiply-add that XLA fuses with its
  neighbours, forward and backward; the weight gradient is k*k per-channel
  reductions. XLA:CPU's grouped convolution has no such fast path.
  """
  k = kernel.shape[0]
  (pt, pb), (pl, pr) = _pads(x.shape, k, strides, padding)
  x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  n, h, w, _ = x.shape
  ho, wo = (h - k) // strides + 1, (w - k) // strides + 1
  y = None
  for i in range(k):
    for j in range(k):
      tap = x[:, i:i + strides * (ho - 1) + 1:strides,
              j:j + strides * (wo - 1) + 1:strides, :] * kernel[i, j, 0]
      y = tap if y is None else y + tap
  return y


def _running_max(x, axis: int, window: int, strides: int):
  """1-D max over windows along ``axis``, and the first argmax's tap (int8)."""
  n = x.shape[axis]
  span = strides * ((n - window) // strides) + 1
  y, tap = None, None
  for i in range(window):
    t = lax.slice_in_dim(x, i, i + span, strides, axis)
    if y is None:
      y, tap = t, jnp.zeros(t.shape, jnp.int8)
    else:
      better = t > y  # strict: the first maximum wins a tie, as in XLA
      y, tap = jnp.where(better, t, y), jnp.where(better, jnp.int8(i), tap)
  return y, tap


def _running_max_grad(dy, tap, n: int, axis: int, window: int, strides: int):
  """Routes ``dy`` back to the argmax of each window (length ``n`` on axis).

  Written as a gather (input position m collects from the windows that hold
  it at tap i) over ``dy`` spread out by the stride, so XLA fuses it into one
  elementwise pass instead of a scatter-add per tap.
  """
  span = strides * (dy.shape[axis] - 1) + 1
  spread = [(0, 0, 0)] * dy.ndim
  spread[axis] = (window - 1, n - span, strides - 1)
  dy = lax.pad(dy, jnp.zeros((), dy.dtype), spread)
  tap = lax.pad(tap, jnp.int8(-1), spread)
  dx = None
  for i in range(window):
    start = window - 1 - i
    part = jnp.where(lax.slice_in_dim(tap, start, start + n, 1, axis) == i,
                     lax.slice_in_dim(dy, start, start + n, 1, axis), 0)
    dx = part if dx is None else dx + part
  return dx


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _separable_max(x, window: int, strides: int):
  return _separable_max_fwd(x, window, strides)[0]


def _separable_max_fwd(x, window, strides):
  # Along W first, then H: ties then go to the first maximum in row-major
  # order, like XLA's select_and_scatter.
  cols, tap_w = _running_max(x, 2, window, strides)
  y, tap_h = _running_max(cols, 1, window, strides)
  return y, (tap_w, tap_h, x.shape[2], cols.shape[1])


@jax.named_scope('max_pool')
def _separable_max_bwd(window, strides, residuals, dy):
  tap_w, tap_h, width, height = residuals
  d_cols = _running_max_grad(dy, tap_h, height, 1, window, strides)
  return (_running_max_grad(d_cols, tap_w, width, 2, window, strides),)


_separable_max.defvjp(_separable_max_fwd, _separable_max_bwd)


def max_pool_separable(x, window: int, strides: int, padding):
  """Max pool as a 1-D running max along W, then along H.

  Its gradient goes to the first maximum of each window in row-major order,
  as XLA's does, through two int8 argmax maps saved in the
  forward pass: elementwise selects instead of XLA's select_and_scatter, and
  no float masks kept for the backward pass.
  """
  (pt, pb), (pl, pr) = _pads(x.shape, window, strides, padding)
  x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)),
              constant_values=-jnp.inf)
  return _separable_max(x, window, strides)


def _as_bits(x):
  """A 16-bit float array's bits, as uint16 (free: a bitcast)."""
  return lax.bitcast_convert_type(x, jnp.uint16)


def _is_16bit_float(dtype) -> bool:
  return jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _concat_bits(xs, axis: int):
  dtype = xs[0].dtype
  return lax.bitcast_convert_type(
      jnp.concatenate([_as_bits(x) for x in xs], axis), dtype)


def _concat_bits_fwd(xs, axis):
  # Residuals must be arrays: empty ones carry the pieces' sizes.
  return _concat_bits(xs, axis), [jnp.zeros((x.shape[axis], 0)) for x in xs]


def _concat_bits_bwd(axis, sizes, dy):
  return (_split_bits(dy, tuple(s.shape[0] for s in sizes), axis),)


_concat_bits.defvjp(_concat_bits_fwd, _concat_bits_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _split_bits(y, sizes: tuple, axis: int):
  bits = _as_bits(y)
  out, start = [], 0
  for s in sizes:
    out.append(lax.bitcast_convert_type(
        lax.slice_in_dim(bits, start, start + s, axis=axis), y.dtype))
    start += s
  return out


def _split_bits_fwd(y, sizes, axis):
  return _split_bits(y, sizes, axis), None


def _split_bits_bwd(sizes, axis, _, dys):
  return (_concat_bits(list(dys), axis),)


_split_bits.defvjp(_split_bits_fwd, _split_bits_bwd)


def concatenate(xs, axis: int = -1):
  """``jnp.concatenate``, as bits for 16-bit floats (and its gradient too).

  XLA:CPU computes a bf16 concatenate or slice in float32, a conversion
  pass over every operand and back; moving the same bits as uint16 skips
  both.
  """
  axis = axis % xs[0].ndim
  if _is_16bit_float(xs[0].dtype) and all(x.dtype == xs[0].dtype for x in xs):
    return _concat_bits(list(xs), axis)
  return jnp.concatenate(xs, axis)


def split(y, sizes, axis: int = -1):
  """``y`` cut into pieces of ``sizes`` along ``axis``; bits for 16-bit floats."""
  axis = axis % y.ndim
  if _is_16bit_float(y.dtype):
    return _split_bits(y, tuple(int(s) for s in sizes), axis)
  return jnp.split(y, np.cumsum(sizes)[:-1], axis)
