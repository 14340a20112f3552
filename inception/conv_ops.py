"""Convolution and max-pool kernels behind the ``conv_impl`` switch.

``impl`` is one of:
  * ``'xla'``: ``lax.conv_general_dilated`` and ``lax.reduce_window``.
  * ``'gemm'``: im2col convolutions (one matrix multiply over k*k*C_in
    channels; their gradients are matrix multiplies too) and a separable max
    pool built from shifted maxima.
  * ``'auto'``: ``'xla'`` on GPU and TPU; on CPU, the faster of the two for
    each layer, chosen from measurements (``benchmarks/README.md``).

On XLA:CPU a convolution runs at a fraction of GEMM speed, most of all its
weight gradient, and a max pool's gradient goes through select_and_scatter,
which is several times slower than the pool itself. Both implementations give
the same numbers up to float rounding (``tests/test_conv_ops.py``).
"""
import jax
import jax.numpy as jnp
from jax import lax

IMPLS = ('auto', 'xla', 'gemm')


def _check(impl):
  if impl not in IMPLS:
    raise ValueError(f'conv_impl must be one of {IMPLS}, got {impl!r}')


def _on_cpu() -> bool:
  return jax.default_backend() == 'cpu'


def _pads(x_shape, k: int, strides: int, padding):
  if isinstance(padding, str):
    return lax.padtype_to_pads(x_shape[1:3], (k, k), (strides, strides),
                               padding)
  return tuple(tuple(p) for p in padding)


def conv_gemm(x, kernel, strides: int, padding):
  """NHWC x HWIO convolution as im2col + one matrix multiply."""
  k, _, cin, cout = kernel.shape
  (pt, pb), (pl, pr) = _pads(x.shape, k, strides, padding)
  x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  n, h, w, _ = x.shape
  ho, wo = (h - k) // strides + 1, (w - k) // strides + 1
  patches = jnp.concatenate([
      x[:, i:i + strides * (ho - 1) + 1:strides,
        j:j + strides * (wo - 1) + 1:strides, :]
      for i in range(k) for j in range(k)], axis=-1)
  y = lax.dot_general(patches, kernel.reshape(k * k * cin, cout),
                      (((3,), (0,)), ((), ())))
  return y


def _gemm_pays(x_shape, kernel_shape) -> bool:
  """Whether im2col beats XLA's convolution on CPU for this layer.

  From ``benchmarks/conv_impl.py`` on a 2-core x86 CPU (forward + backward):
  XLA's convolution is weakest with very few input channels (the stem) and
  for 3x3 layers with 32 or more; im2col loses on 5x5 layers whose patch
  matrix grows past 800 columns, and on narrow outputs.
  """
  del x_shape
  k, _, cin, cout = kernel_shape
  if k <= 3:
    return cin <= 8 or cin >= 32
  return k * k * cin <= 800 and cout >= 64


def conv2d(x, kernel, strides: int, padding, impl: str = 'auto'):
  """NHWC x HWIO convolution with the selected implementation."""
  _check(impl)
  if impl == 'gemm' or (impl == 'auto' and _on_cpu()
                        and _gemm_pays(x.shape, kernel.shape)):
    return conv_gemm(x, kernel, strides, padding)
  return lax.conv_general_dilated(
      x, kernel, (strides, strides), padding,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def max_pool_separable(x, window: int, strides: int, padding):
  """Max pool as a 1-D running max over rows, then over columns.

  Its gradient is a chain of elementwise selects rather than XLA's
  select_and_scatter. Where several inputs tie for a maximum, the gradient
  is shared among them (a valid subgradient) instead of sent to one.
  """
  (pt, pb), (pl, pr) = _pads(x.shape, window, strides, padding)
  x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)),
              constant_values=-jnp.inf)

  def running_max(x, axis):
    n = x.shape[axis]
    out = (n - window) // strides + 1
    span = strides * (out - 1) + 1
    taps = [lax.slice_in_dim(x, i, i + span, strides, axis)
            for i in range(window)]
    result = taps[0]
    for t in taps[1:]:
      result = jnp.maximum(result, t)
    return result

  return running_max(running_max(x, 1), 2)


def max_pool(x, window: int, strides: int, padding, impl: str = 'auto'):
  """Square max pooling over H and W of an NHWC array."""
  _check(impl)
  if impl == 'gemm' or (impl == 'auto' and _on_cpu()):
    return max_pool_separable(x, window, strides, padding)
  if not isinstance(padding, str):
    padding = ((0, 0),) + tuple(padding) + ((0, 0),)
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, window, window, 1),
                           (1, strides, strides, 1), padding)
