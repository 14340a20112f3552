"""One object that says which kernels run a model, resolved once: ``resolve``.

``config.conv_impl`` names a choice; ``resolve`` turns it, with the compute
dtype and the device count, into a ``Kernels`` object at model build time.
Every Flax module of ``inception.models`` receives that object and calls its
methods (``conv2d``, ``pointwise``, ``matmul``, ``depthwise``, ``max_pool``,
``avg_pool``, ``concat``, ``split``, ``bn_on_onednn``,
``activations``); no module sees a string. The choices:

  * ``'xla'``: ``lax.conv_general_dilated`` and ``lax.reduce_window``.
  * ``'gemm'``: im2col convolutions, the separable max pool and the
    shifted-sum depthwise of ``xla_cpu``, and each Inception block's parallel
    1x1 layers fused into one GEMM.
  * ``'onednn'``: every convolution, 1x1 included, forward and both
    gradients, max and average pooling and training-mode BatchNorm (+ ReLU) on oneDNN
    (``inception.kernels.onednn``); depthwise layers as in ``'gemm'``. CPU,
    one device.
  * ``'auto'``: ``'xla'`` on GPU and TPU. On the CPU, ``'onednn'`` where its
    kernels are installed and the program runs on one device; otherwise XLA's
    or im2col convolutions layer by layer (``xla_cpu.im2col_pays``) with the
    CPU pooling and depthwise kernels.

oneDNN's kernels are opaque to XLA's SPMD partitioner, which would gather a
sharded batch onto every device around them: hence one device only. The
measurements behind these rules are in ``benchmarks/README.md``.
"""
import dataclasses
import functools
from typing import Any

from absl import logging
from flax.linen import pooling as flax_pooling
import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from inception.errors import UserError
from inception.kernels import gemm, onednn, xla_cpu

IMPLS = ('auto', 'xla', 'gemm', 'onednn')


@dataclasses.dataclass(frozen=True)
class Kernels:
  """The kernels of one model, and the dtypes it computes and keeps in.

  Attributes:
    convs: how kxk convolutions run: ``'xla'``, ``'im2col'``, ``'per_layer'``
      (im2col where it pays on XLA:CPU, else XLA's) or ``'onednn'``.
    cpu_tuned: max pooling and depthwise layers take ``xla_cpu``'s kernels.
    fuse_pointwise: an Inception block computes its parallel 1x1 layers as
      one GEMM (``'gemm'`` and oneDNN: fewer, larger GEMMs pay there).
    compute_dtype: the GEMM operands' dtype (None: the input's); products
      accumulate in float32 on every path.
    activation_dtype: the dtype activations are kept in between layers
      (``activation_dtype``).
    requested: the ``conv_impl`` this was resolved from, for messages.
  """
  convs: str = 'xla'
  cpu_tuned: bool = False
  fuse_pointwise: bool = False
  compute_dtype: Any = None
  activation_dtype: Any = jnp.dtype(jnp.float32)
  requested: str = 'xla'

  @property
  def onednn(self) -> bool:
    """Whether convolutions, pooling and BatchNorm run on oneDNN."""
    return self.convs == 'onednn'

  def portable(self) -> 'Kernels':
    """The same dtypes on XLA's own kernels: one op per layer, no custom calls."""
    return dataclasses.replace(self, convs='xla', cpu_tuned=False,
                               fuse_pointwise=False, requested='xla')

  def activations(self, x):
    """``x`` in the activations' dtype (a model's input, first thing)."""
    return x.astype(self.activation_dtype)

  def conv2d(self, x, kernel, strides: int, padding, bias=None,
             relu: bool = False):
    """NHWC x HWIO convolution, in x's dtype; then ``+ bias``, then ReLU.

    On oneDNN the bias and ReLU run inside the convolution.
    """
    if self.onednn:
      return onednn.conv2d(x, kernel, strides, padding, self.compute_dtype,
                           bias=bias, relu=relu)
    if self.convs == 'im2col' or (self.convs == 'per_layer' and
                                  xla_cpu.im2col_pays(x.shape, kernel.shape)):
      y = xla_cpu.conv_gemm(x, kernel, strides, padding, self.compute_dtype)
      return _bias_relu(y, bias, relu)
    cd = self.compute_dtype or x.dtype
    with jax.named_scope('xla_conv'):
      y = lax.conv_general_dilated(
          x.astype(cd), kernel.astype(cd), (strides, strides), padding,
          dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
          preferred_element_type=jnp.promote_types(x.dtype, jnp.float32))
    return _bias_relu(y.astype(x.dtype), bias, relu)

  def pointwise(self, x, kernel, bias=None, relu: bool = False):
    """1x1 convolution ``x [N, H, W, C] @ kernel [C, O]``, in x's dtype;
    then ``+ bias``, then ReLU (inside the convolution on oneDNN)."""
    if self.onednn:
      return onednn.conv2d(x, kernel[None, None], 1, 'VALID',
                           self.compute_dtype, bias=bias, relu=relu)
    return _bias_relu(gemm.matmul(x, kernel, self.compute_dtype), bias, relu)

  def matmul(self, x, w):
    """A dense layer's ``x [..., K] @ w [K, N]``, in x's dtype."""
    return gemm.matmul(x, w, self.compute_dtype)

  @jax.named_scope('depthwise')
  def depthwise(self, x, kernel, strides: int, padding):
    """Depthwise convolution, kernel ``(k, k, 1, C)``, in x's dtype."""
    if self.cpu_tuned:
      return xla_cpu.depthwise_shifted(x, kernel, strides, padding)
    return lax.conv_general_dilated(
        x, kernel, (strides, strides), padding,
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
        feature_group_count=x.shape[-1])

  @jax.named_scope('max_pool')
  def max_pool(self, x, window: int, strides: int, padding):
    """Square max pooling over H and W of an NHWC array."""
    if self.onednn and x.dtype in (jnp.float32, jnp.bfloat16):
      return onednn.max_pool(x, window, strides, padding)
    if self.cpu_tuned:
      return xla_cpu.max_pool_separable(x, window, strides, padding)
    if not isinstance(padding, str):
      padding = ((0, 0),) + tuple(padding) + ((0, 0),)
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, window, window, 1),
                             (1, strides, strides, 1), padding)

  @jax.named_scope('avg_pool')
  def avg_pool(self, x, window: int, strides: int, padding):
    """Square average pooling over H and W of an NHWC array, in x's dtype;
    padded positions are not counted."""
    if self.onednn and x.dtype in (jnp.float32, jnp.bfloat16):
      return onednn.avg_pool(x, window, strides, padding)
    # flax's divisor is float32: back to the activations' dtype.
    return flax_pooling.avg_pool(x, (window, window), (strides, strides),
                                 padding, count_include_pad=False).astype(
                                     x.dtype)

  def concat(self, xs):
    """Channel (last-axis) concatenation, as XLA:CPU moves 16-bit floats best."""
    if self.cpu_tuned:
      return xla_cpu.concatenate(xs, axis=-1)
    return jnp.concatenate(xs, axis=-1)

  def split(self, y, sizes):
    """``y`` cut along its channels into pieces of ``sizes``; ``concat``'s inverse."""
    if self.cpu_tuned:
      return xla_cpu.split(y, sizes, axis=-1)
    return jnp.split(y, np.cumsum(sizes)[:-1], axis=-1)

  def bn_on_onednn(self, shape, dtype, epsilon: float, relu: bool) -> bool:
    """Whether training-mode BatchNorm of this input runs on oneDNN."""
    return self.onednn and onednn.batch_norm_vectorized(shape, dtype, epsilon,
                                                        relu)


def _bias_relu(y, bias, relu: bool):
  """``y + bias`` (bias None: none), then ReLU if ``relu``; in y's dtype."""
  if bias is not None:
    y = y + bias.astype(y.dtype)
  return jax.nn.relu(y) if relu else y


XLA = Kernels()  # XLA's own kernels in float32: the default of every module


def onednn_unavailable_message() -> str:
  """The one message for ``conv_impl='onednn'`` where it cannot run."""
  return (f"config.conv_impl='onednn' cannot run here: "
          f"{onednn.unavailable_reason()}. Build the kernels with "
          f"{onednn.HOW_TO_BUILD}, or use 'auto'")


def platform() -> str:
  """The platform programs compile for: 'cpu', 'gpu' or 'tpu' (tests force it)."""
  return jax.default_backend()


def _onednn_runs(impl: str, devices: int, on_cpu: bool, bf16: bool) -> bool:
  """Whether ``impl`` runs on oneDNN here; refuses what cannot run.

  ``bf16``: the compute dtype is bfloat16, which oneDNN runs only where the
  CPU has AVX-512 (``onednn.supports_bf16``); elsewhere 'auto' keeps XLA's
  kernels, which run bf16 on any CPU.
  """
  if impl == 'onednn':
    if not onednn.available():
      raise UserError(onednn_unavailable_message())
    if devices > 1:
      raise UserError(
          f"config.conv_impl='onednn' runs on one device and this program "
          f"runs on {devices}: its kernels are opaque to XLA's partitioner. "
          "Use 'auto' (XLA's kernels on several devices) or one device")
    if bf16 and not onednn.supports_bf16():
      raise UserError(
          "config.conv_impl='onednn' with dtype bfloat16: oneDNN has no bf16 "
          "kernels on this CPU (they need AVX-512). Use 'auto' (XLA's "
          "kernels) or --config.dtype=float32")
    return True
  if impl != 'auto' or not on_cpu or devices != 1:
    return False
  if not onednn.available():
    onednn.warn_unavailable()
    return False
  if bf16 and not onednn.supports_bf16():
    _warn_no_bf16()
    return False
  return True


@functools.cache
def _warn_no_bf16():
  logging.warning("oneDNN has no bf16 kernels on this CPU (they need "
                  "AVX-512): bfloat16 runs on XLA's kernels.")


def activation_dtype(compute_dtype, on_onednn: bool,
                     relus_on_onednn: bool = True):
  """The dtype a model keeps its activations in between layers.

  The one statement of the mixed-precision policy. With a float32 compute
  dtype everything is float32. With bfloat16, parameters, optimizer state,
  BatchNorm statistics, the loss and the logits stay float32 and every
  product accumulates in float32; the activations between layers are:
    * bfloat16 on GPU and TPU (flax examples' ``half_precision``, big_vision,
      timm's AMP): it halves the memory traffic small convolutions are bound
      by;
    * bfloat16 on the CPU where the model runs on oneDNN and every ReLU runs
      inside a oneDNN kernel (BatchNorm + ReLU, or NiN's convolution + bias +
      ReLU), with no depthwise layers, which are XLA's: oneDNN's kernels read
      and write bf16 as it is;
    * float32 elsewhere on the CPU: XLA:CPU runs bf16 elementwise work
      through f32 conversions, slower than f32 (the separable nets, and
      GoogLeNet without BatchNorm, whose fused 1x1 GEMM's ReLUs are XLA's).
  ``benchmarks/README.md`` has the measurements (``throughput.py
  --activation_dtype``); ``config.activation_dtype`` overrides the rule.
  """
  if compute_dtype is None or jnp.dtype(compute_dtype) != jnp.bfloat16:
    return jnp.dtype(jnp.float32)
  if platform() != 'cpu' or (relus_on_onednn and on_onednn):
    return jnp.dtype(jnp.bfloat16)
  return jnp.dtype(jnp.float32)


def _dtype(value):
  return jnp.dtype(value) if value not in (None, '', 'auto') else None


def resolve(conv_impl: str = 'auto', dtype=None, activation_dtype_=None, *,
            relus_on_onednn: bool = True,
            devices: int | None = None) -> Kernels:
  """The ``Kernels`` for ``conv_impl`` here: every check in one place.

  Args:
    conv_impl: one of ``IMPLS``.
    dtype: the GEMM compute dtype (e.g. ``'bfloat16'``); None: float32.
    activation_dtype_: the activations' dtype; None or ``'auto'``: the policy
      of ``activation_dtype``.
    relus_on_onednn: every ReLU of the model runs inside a oneDNN kernel
      when it runs on oneDNN (it decides whether bf16 activations pay).
    devices: how many devices the program runs on (default: all of them).

  Raises:
    UserError: an unknown ``conv_impl``, or ``'onednn'`` where it cannot run
      (not installed, not the CPU, several devices).
  """
  if conv_impl not in IMPLS:
    raise UserError(f'config.conv_impl must be one of {", ".join(IMPLS)}, '
                    f'got {conv_impl!r}')
  devices = jax.device_count() if devices is None else devices
  cpu = platform() == 'cpu'
  compute = _dtype(dtype)
  on_onednn = _onednn_runs(conv_impl, devices, cpu,
                           compute == jnp.dtype(jnp.bfloat16))
  if on_onednn:
    convs = 'onednn'
  elif conv_impl == 'gemm':
    convs = 'im2col'
  elif conv_impl == 'auto' and cpu:
    convs = 'per_layer'
  else:
    convs = 'xla'
  activations = _dtype(activation_dtype_) or activation_dtype(
      compute, on_onednn, relus_on_onednn)
  return Kernels(
      convs=convs,
      cpu_tuned=conv_impl in ('gemm', 'onednn') or (conv_impl == 'auto' and cpu),
      fuse_pointwise=conv_impl == 'gemm' or on_onednn,
      compute_dtype=compute, activation_dtype=activations,
      requested=conv_impl)
