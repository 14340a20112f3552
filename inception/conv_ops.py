"""Convolution and max-pool kernels behind the ``conv_impl`` switch.

``impl`` is one of:
  * ``'xla'``: ``lax.conv_general_dilated`` and ``lax.reduce_window``.
  * ``'gemm'``: im2col convolutions (one matrix multiply over k*k*C_in
    channels; their gradients are matrix multiplies too), a separable max
    pool built from shifted maxima, with a custom gradient, and each
    Inception block's parallel 1x1 layers fused into one GEMM.
  * ``'onednn'``: every convolution, 1x1 included, forward and both
    gradients, max pooling and training-mode BatchNorm (+ ReLU) on oneDNN
    through XLA's FFI (``inception.onednn``); depthwise layers as in
    ``'gemm'``. CPU only. With a bfloat16 compute dtype the activations
    between these kernels are bf16 too (``activation_dtype``).
  * ``'auto'``: ``'xla'`` on GPU and TPU. On CPU, ``'onednn'`` where its
    kernels are built and the program runs on one device; otherwise the
    faster of ``'xla'`` and ``'gemm'`` for each layer, chosen from
    measurements (``benchmarks/README.md``).

On XLA:CPU a convolution runs at a fraction of GEMM speed, most of all its
weight gradient, and a max pool's gradient goes through select_and_scatter,
which is several times slower than the pool itself. Every implementation gives
the same numbers up to float rounding, max-pool gradients included, ties too
(``tests/test_conv_ops.py``, ``tests/test_onednn.py``).

oneDNN's kernels leave XLA's program whole but are opaque to its SPMD
partitioner, which would gather a sharded batch onto every device around
them; so ``'auto'`` uses them only when the program runs on a single device.
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax

from inception import gemm, onednn

IMPLS = ('auto', 'xla', 'gemm', 'onednn')


def _check(impl):
  if impl not in IMPLS:
    raise ValueError(f'conv_impl must be one of {IMPLS}, got {impl!r}')


def _on_cpu() -> bool:
  return jax.default_backend() == 'cpu'


def uses_onednn(impl: str) -> bool:
  """Whether ``impl`` runs this program's convolutions on oneDNN."""
  _check(impl)
  if impl == 'onednn':
    if not onednn.available():
      raise ValueError(onednn_unavailable_message())
    return True
  if impl != 'auto' or not _on_cpu() or jax.device_count() != 1:
    return False
  if not onednn.available():
    onednn.warn_unavailable()
    return False
  return True


def onednn_unavailable_message() -> str:
  """The one message for ``conv_impl='onednn'`` where it cannot run."""
  return (f"conv_impl='onednn' cannot run here: "
          f"{onednn.unavailable_reason()}. Build the kernels with "
          f"{onednn.HOW_TO_BUILD}, or use 'auto'")


def activation_dtype(impl: str, compute_dtype=None,
                     bn_after_every_conv: bool = True):
  """The dtype a model keeps its activations in between layers.

  The one statement of the mixed-precision policy. With a float32 compute
  dtype everything is float32. With bfloat16, parameters, optimizer state,
  BatchNorm statistics, the loss and the logits stay float32 and every
  product accumulates in float32; the activations between layers are:
    * bfloat16 on GPU and TPU (flax examples' ``half_precision``, big_vision,
      timm's AMP): it halves the memory traffic that small convolutions are
      bound by;
    * bfloat16 on the CPU where ``impl`` runs on oneDNN and BatchNorm follows
      every convolution (no depthwise layers, which are XLA's): oneDNN's
      kernels read and write bf16 as it is;
    * float32 elsewhere on the CPU: XLA:CPU runs bf16 elementwise work
      through f32 conversions, slower than f32 (NiN, the separable nets).
  The CPU measurements behind the rule are in ``benchmarks/README.md``
  (``throughput.py --activation_dtype``); ``config.activation_dtype``
  overrides it.
  """
  if compute_dtype is None or jnp.dtype(compute_dtype) != jnp.bfloat16:
    return jnp.dtype(jnp.float32)
  if not _on_cpu() or (bn_after_every_conv and uses_onednn(impl)):
    return jnp.dtype(jnp.bfloat16)
  return jnp.dtype(jnp.float32)


def _cpu_kernels(impl: str) -> bool:
  """Whether pooling and depthwise layers take the CPU-tuned kernels."""
  _check(impl)
  return impl in ('gemm', 'onednn') or (impl == 'auto' and _on_cpu())


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


def _gemm_pays(x_shape, kernel_shape) -> bool:
  """Whether im2col beats XLA's convolution on CPU for this layer.

  From ``benchmarks/conv_impl.py`` and whole training steps on a 2-core x86
  CPU (forward + backward): XLA's convolution is weakest with very few input
  channels (the stem), for 3x3 layers with 32 or more, and for 3x3 layers
  with 16 or more at 32x32 and above (GoogLeNet-CIFAR's 3b at width 1/8:
  2.5x for the layer, 1.03x for the whole training step). im2col loses on 5x5
  layers whose patch matrix grows past 800 columns, and on narrow outputs.
  """
  k, _, cin, cout = kernel_shape
  if k <= 3:
    return cin <= 8 or cin >= 32 or (cin >= 16 and x_shape[1] >= 32)
  return k * k * cin <= 800 and cout >= 64


def fuses_pointwise(impl: str) -> bool:
  """Whether an Inception block computes its parallel 1x1 layers as one GEMM.

  ``'gemm'`` (the all-GEMM path) and oneDNN (``uses_onednn``): yes.
  ``'xla'``, and ``'auto'`` without oneDNN: no. On a 2-core CPU
  ``benchmarks/fusion.py`` measured no block faster fused beyond noise with
  XLA's GEMMs (1.00x at full width, 1.02x at width 1/8); with oneDNN's 1x1
  convolutions the whole training step at width 1/8 runs 1.12x faster fused
  (373 against 333 images/s, two runs each) and full width is unchanged
  (27.8 against 28.2). On GPU and TPU it is unmeasured.
  """
  _check(impl)
  return impl == 'gemm' or uses_onednn(impl)


def conv2d(x, kernel, strides: int, padding, impl: str = 'auto',
           compute_dtype=None):
  """NHWC x HWIO convolution with the selected implementation, in x's dtype.

  ``compute_dtype`` (e.g. bfloat16) is the operands' dtype; products
  accumulate in float32 on every path.
  """
  if uses_onednn(impl):
    return onednn.conv2d(x, kernel, strides, padding, compute_dtype)
  if impl == 'gemm' or (impl == 'auto' and _on_cpu()
                        and _gemm_pays(x.shape, kernel.shape)):
    return conv_gemm(x, kernel, strides, padding, compute_dtype)
  cd = compute_dtype or x.dtype
  with jax.named_scope('xla_conv'):
    y = lax.conv_general_dilated(
        x.astype(cd), kernel.astype(cd), (strides, strides), padding,
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
        preferred_element_type=jnp.promote_types(x.dtype, jnp.float32))
  return y.astype(x.dtype)


def pointwise(x, kernel, impl: str = 'auto', compute_dtype=None):
  """1x1 convolution ``x [N, H, W, C] @ kernel [C, O]``, in x's dtype.

  One oneDNN 1x1 convolution where ``uses_onednn(impl)``, otherwise one 2-D
  GEMM (``gemm.matmul``).
  """
  if uses_onednn(impl):
    return onednn.conv2d(x, kernel[None, None], 1, 'VALID', compute_dtype)
  return gemm.matmul(x, kernel, compute_dtype)


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


@jax.named_scope('depthwise')
def depthwise_conv2d(x, kernel, strides: int, padding, impl: str = 'auto'):
  """Depthwise convolution (one kxk filter per channel), HWIO kernel (k, k, 1, C).

  ``'gemm'`` (and ``'auto'`` on CPU) sums shifted products
  (``depthwise_shifted``); ``'xla'`` is ``lax.conv_general_dilated`` with
  ``feature_group_count = C``.
  """
  if _cpu_kernels(impl):
    return depthwise_shifted(x, kernel, strides, padding)
  return lax.conv_general_dilated(
      x, kernel, (strides, strides), padding,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=x.shape[-1])


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


@jax.named_scope('max_pool')
def max_pool(x, window: int, strides: int, padding, impl: str = 'auto'):
  """Square max pooling over H and W of an NHWC array."""
  if x.dtype in (jnp.float32, jnp.bfloat16) and uses_onednn(impl):
    return onednn.max_pool(x, window, strides, padding)
  if _cpu_kernels(impl):
    return max_pool_separable(x, window, strides, padding)
  if not isinstance(padding, str):
    padding = ((0, 0),) + tuple(padding) + ((0, 0),)
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, window, window, 1),
                           (1, strides, strides, 1), padding)
