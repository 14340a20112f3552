"""Layers: GEMM 1x1 conv, dense, ConvBN, NiN mlpconv, Inception block.

All modules are Flax Linen, NHWC. Each receives ``kernels``, the
``inception.kernels.backend.Kernels`` its model was built with: which kernels
run its convolutions, pooling and BatchNorm, and the GEMM compute dtype (e.g.
``jnp.bfloat16``: operands cast to it, products accumulated in float32).
Parameters, BatchNorm statistics and the logits stay float32; layers keep
their input's dtype.
"""
import math
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception.kernels.backend import XLA, Kernels
from inception.kernels.batchnorm import BatchNorm

Dtype = Any

# He init: every conv here feeds a ReLU, and NiN trains without BatchNorm.
conv_init = nn.initializers.kaiming_normal()


class Conv1x1(nn.Module):
  """1x1 convolution as one GEMM over channels, or one oneDNN convolution.

  On CPU a 1x1 ``lax.conv`` trains several times slower than the same
  contraction as a matrix multiply, so every 1x1 layer in every model uses
  this module (``Kernels.pointwise``). The kernel has ``nn.Conv``'s layout
  ``(1, 1, in, out)``, so parameters are interchangeable with
  ``nn.Conv(features, (1, 1))``.

  ``strides > 1`` subsamples space before the contraction: this is exactly
  what a strided 1x1 convolution with no padding computes.

  Attributes:
    features: number of output channels.
    strides: spatial stride (int).
    use_bias: add a learned bias.
    relu: apply a ReLU last (on oneDNN, inside the convolution, with the bias).
    kernels: one oneDNN convolution where they run on oneDNN, else one GEMM
      in their compute dtype.
    param_dtype: parameter dtype.
    kernel_init: initializer for the kernel.
  """
  features: int
  strides: int = 1
  use_bias: bool = True
  relu: bool = False
  kernels: Kernels = XLA
  param_dtype: Dtype = jnp.float32
  kernel_init: Any = conv_init

  @nn.compact
  def __call__(self, x, weights_only: bool = False):
    """``x`` -> the convolution; with ``weights_only``, ``(kernel [in, out], bias)``."""
    kernel = self.param('kernel', self.kernel_init,
                        (1, 1, x.shape[-1], self.features), self.param_dtype)
    bias = (self.param('bias', nn.initializers.zeros, (self.features,),
                       self.param_dtype) if self.use_bias else None)
    if weights_only:  # for a fused GEMM (InceptionBlock)
      return kernel[0, 0], bias
    if self.strides > 1:
      x = x[:, ::self.strides, ::self.strides, :]
    return self.kernels.pointwise(x, kernel[0, 0], bias, self.relu)


class Dense(nn.Module):
  """``nn.Dense`` (same parameters and init) on ``kernels.matmul``.

  Attributes:
    features: number of outputs.
    use_bias: add a learned bias.
    kernels: the model's kernels (the GEMM's compute dtype).
  """
  features: int
  use_bias: bool = True
  kernels: Kernels = XLA
  kernel_init: Any = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', self.kernel_init,
                        (x.shape[-1], self.features), jnp.float32)
    y = self.kernels.matmul(x, kernel)
    if not self.use_bias:
      return y
    bias = self.param('bias', nn.initializers.zeros, (self.features,),
                      jnp.float32)
    return y + bias.astype(y.dtype)


class ConvKxK(nn.Module):
  """Spatial (k > 1) convolution with a selectable implementation.

  Padding is symmetric ``k // 2`` (Caffe/PyTorch style), or the string
  ``'SAME'``/``'VALID'``. ``kernels.conv2d`` runs it, with the bias and,
  if ``relu``, a ReLU after it (inside the convolution on oneDNN).
  """
  features: int
  kernel_size: int
  strides: int = 1
  padding: Any = None
  use_bias: bool = True
  relu: bool = False
  kernels: Kernels = XLA
  param_dtype: Dtype = jnp.float32
  kernel_init: Any = conv_init

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param('kernel', self.kernel_init,
                        (k, k, x.shape[-1], self.features), self.param_dtype)
    bias = (self.param('bias', nn.initializers.zeros, (self.features,),
                       self.param_dtype) if self.use_bias else None)
    padding = self.padding
    if padding is None:
      padding = ((k // 2, k // 2), (k // 2, k // 2))
    return self.kernels.conv2d(x, kernel, self.strides, padding, bias,
                               self.relu)


class DepthwiseConv(nn.Module):
  """Depthwise kxk convolution: one filter per input channel, no channel mixing.

  The kernel has ``nn.Conv(C, (k, k), feature_group_count=C)``'s layout
  ``(k, k, 1, C)``. Padding is symmetric ``k // 2``. No bias: in this
  codebase it is always followed by a pointwise (1x1) layer, whose bias or
  BatchNorm offset absorbs it. ``kernels.depthwise`` runs it. It has no GEMM, so no compute ``dtype``: it runs in the
  activations' dtype, like BatchNorm and pooling.
  """
  kernel_size: int
  strides: int = 1
  kernels: Kernels = XLA
  param_dtype: Dtype = jnp.float32
  kernel_init: Any = conv_init

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param('kernel', self.kernel_init, (k, k, 1, x.shape[-1]),
                        self.param_dtype)
    kernel = kernel.astype(x.dtype)
    pads = ((k // 2, k // 2), (k // 2, k // 2))
    return self.kernels.depthwise(x, kernel, self.strides, pads)


class ConvBN(nn.Module):
  """Convolution, optional BatchNorm, ReLU. 1x1 kernels use ``Conv1x1``.

  The convolution has a bias only when there is no BatchNorm after it (the BN
  offset makes it redundant).

  BatchNorm statistics are global under ``jax.jit``: the batch is sharded
  over the mesh's ``data`` axis and the batch mean is a reduction over a
  global array, so XLA inserts the cross-device all-reduce and no
  ``axis_name`` is needed (unlike pmap).
  """
  features: int
  kernel_size: int = 1
  strides: int = 1
  padding: Any = None
  use_bn: bool = True
  relu: bool = True
  kernels: Kernels = XLA

  @nn.compact
  def __call__(self, x, train: bool = False, *, weights_only: bool = False,
               pre_activation=None):
    """Convolution, BatchNorm, ReLU of ``x``.

    A fused GEMM (``InceptionBlock``) calls a 1x1 ConvBN twice: first with
    ``weights_only`` for its ``(kernel, bias)``, then with the GEMM's output
    slice as ``pre_activation`` (``x`` unused) for BatchNorm and ReLU.
    """
    # Without BatchNorm the ReLU goes with the convolution (fused on oneDNN).
    conv_relu = self.relu and not self.use_bn
    if pre_activation is not None:
      x = pre_activation
      if not self.use_bn:
        return nn.relu(x) if self.relu else x
    elif self.kernel_size == 1 and self.padding in (None, 'SAME', 'VALID'):
      conv = Conv1x1(self.features, self.strides, use_bias=not self.use_bn,
                     relu=conv_relu, kernels=self.kernels, name='conv')
      if weights_only:
        return conv(x, weights_only=True)
      x = conv(x)
    else:
      x = ConvKxK(self.features, self.kernel_size, self.strides, self.padding,
                  use_bias=not self.use_bn, relu=conv_relu,
                  kernels=self.kernels, name='conv')(x)
    if not self.use_bn:
      return x
    return BatchNorm(use_running_average=not train, relu=self.relu,
                     kernels=self.kernels, name='bn')(x)


class MlpConv(nn.Module):
  """NiN mlpconv block: one kxk convolution followed by 1x1 convolutions.

  Attributes:
    features: output widths; ``features[0]`` is the kxk conv, the rest are
      the 1x1 layers (the "micro network" of NiN).
    kernel_size: k of the first convolution.
    final_relu: apply ReLU after the last layer (the public Caffe model does,
      even on the 10-way classifier layer).
  """
  features: Sequence[int]
  kernel_size: int
  use_bn: bool = False
  final_relu: bool = True
  kernels: Kernels = XLA

  @nn.compact
  def __call__(self, x, train: bool = False):
    last = len(self.features) - 1
    for i, f in enumerate(self.features):
      x = ConvBN(f, self.kernel_size if i == 0 else 1, use_bn=self.use_bn,
                 relu=self.final_relu or i < last, kernels=self.kernels,
                 name=f'conv{i}' if i == 0 else f'cccp{i}')(x, train)
    return x


class InceptionWidths(NamedTuple):
  """The six widths of an Inception module, as in Table 1 of Szegedy et al."""
  c1x1: int
  c3x3_reduce: int
  c3x3: int
  c5x5_reduce: int
  c5x5: int
  pool_proj: int

  def scaled(self, width: float) -> 'InceptionWidths':
    return InceptionWidths(*(scale_width(c, width) for c in self))


def scale_width(channels: int, width: float) -> int:
  """Width multiplier with round-half-up and a floor of one channel."""
  return max(1, int(channels * width + 0.5))


class InceptionBlock(nn.Module):
  """Inception module (Szegedy et al. 2014, Fig. 2).

  Attributes:
    widths: the six Table 1 widths.
    bottleneck: if False, the 3x3 and 5x5 branches convolve the block input
      directly (no 1x1 reduction) and keep their output widths.
    pool_proj: if False, the max-pool branch passes the input through
      unprojected. ``bottleneck=False, pool_proj=False`` is the naive module of
      Fig. 2(a).
    separable: if True, every 3x3 and 5x5 branch convolution is depthwise
      separable (Chollet 2017): a depthwise kxk convolution
      (``<branch>_depthwise``), then a pointwise 1x1 to the same output width
      (``<branch>``). BatchNorm and ReLU follow the pointwise layer only, as
      in Xception: the depthwise and pointwise layers together are one
      factored linear map, and Xception's ablation (its section 4.7) found
      that a non-linearity between them trains slower and generalises worse.
      With ``bottleneck`` the branch is reduce 1x1, depthwise kxk, pointwise.
    use_bn: BatchNorm after every convolution.
    fuse: compute the 1x1 layers that read the block input (``#1x1``, and
      with ``bottleneck`` the two reduces) as one GEMM over their
      concatenated kernels, then split; each keeps its own parameters and
      BatchNorm. None: ``kernels.fuse_pointwise`` decides.
  """
  widths: InceptionWidths
  bottleneck: bool = True
  pool_proj: bool = True
  separable: bool = False
  use_bn: bool = True
  kernels: Kernels = XLA
  fuse: bool | None = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    w = self.widths

    def conv(features, k, name):
      return ConvBN(features, k, use_bn=self.use_bn, kernels=self.kernels,
                    name=name)

    heads = {'branch1x1': conv(w.c1x1, 1, 'branch1x1')}
    if self.bottleneck:
      heads['branch3x3_reduce'] = conv(w.c3x3_reduce, 1, 'branch3x3_reduce')
      heads['branch5x5_reduce'] = conv(w.c5x5_reduce, 1, 'branch5x5_reduce')
    fuse = (self.kernels.fuse_pointwise if self.fuse is None
            else self.fuse)
    if fuse and len(heads) > 1:
      out = self._fused_pointwise(x, train, heads)
    else:
      out = {name: head(x, train) for name, head in heads.items()}

    def spatial(name, features, k):
      y = out.get(f'{name}_reduce', x)
      if self.separable:
        y = DepthwiseConv(k, kernels=self.kernels,
                          name=f'{name}_depthwise')(y)
        k = 1  # the pointwise layer
      return conv(features, k, name)(y, train)

    b1 = out['branch1x1']
    b3 = spatial('branch3x3', w.c3x3, 3)
    b5 = spatial('branch5x5', w.c5x5, 5)
    bp = self.kernels.max_pool(x, 3, 1, 'SAME')
    if self.pool_proj:
      bp = conv(w.pool_proj, 1, 'pool_proj')(bp, train)
    with jax.named_scope('concat'):
      return self.kernels.concat([b1, b3, b5, bp])

  def _fused_pointwise(self, x, train, heads):
    """The 1x1 ConvBNs ``heads`` of ``x`` through one GEMM; name -> output."""
    weights = [head(x, train, weights_only=True) for head in heads.values()]
    kernel = jnp.concatenate([k for k, _ in weights], axis=-1)
    y = self.kernels.pointwise(x, kernel)
    if weights[0][1] is not None:  # biases (no BatchNorm)
      y = y + jnp.concatenate([b for _, b in weights]).astype(y.dtype)
    parts = self.kernels.split(y, [k.shape[-1] for k, _ in weights])
    return {name: head(None, train, pre_activation=part)
            for (name, head), part in zip(heads.items(), parts)}


class Dropout(nn.Dropout):
  """``nn.Dropout`` whose mask is drawn as one flat vector, then reshaped.

  The same mask, bit for bit: threefry's counters run over the flattened
  index either way. But XLA:CPU's backend optimises a bernoulli draw over a
  4-D activation shape for many seconds (``jax_threefry_partitionable``'s
  multi-dimensional iota), which dominated compiling NiN's train step;
  ``benchmarks/compile_time.py`` measures it.
  """

  def __call__(self, inputs, deterministic: bool | None = None, rng=None):
    deterministic = nn.merge_param('deterministic', self.deterministic,
                                   deterministic)
    if self.rate == 0.0 or deterministic:
      return inputs
    if self.rate == 1.0:  # as flax: no NaN gradients
      return jnp.zeros_like(inputs)
    keep_prob = 1.0 - self.rate
    if rng is None:
      rng = self.make_rng(self.rng_collection)
    shape = list(inputs.shape)
    for dim in self.broadcast_dims:
      shape[dim] = 1
    flat = jax.random.bernoulli(rng, p=keep_prob, shape=(math.prod(shape),))
    mask = jnp.broadcast_to(flat.reshape(shape), inputs.shape)
    return jax.lax.select(mask, inputs / keep_prob, jnp.zeros_like(inputs))


def global_avg_pool(x):
  """Global average pooling (in float32): one set of parameters serves any
  input size."""
  return jnp.mean(x, axis=(1, 2), dtype=jnp.float32)
