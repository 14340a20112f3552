"""BatchNorm with flax's variables and a hand-written backward pass.

Split from ``inception.models.layers``: the statistics, the custom VJP and the
module. Its backward pass is the same arithmetic as autodiff's (tested equal
to ``flax.linen.BatchNorm``; unlike flax, a bf16 input gives a bf16 output,
the statistics staying float32), in fewer passes over the activations, so it is
used on every backend. Where the model's kernels run on oneDNN
(``Kernels.bn_on_onednn``), ``BatchNorm`` trains on oneDNN's kernel instead
(``inception.kernels.onednn.batch_norm``), with the ReLU fused.
"""
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from inception.kernels import onednn
from inception.kernels.backend import XLA, Kernels

Dtype = Any


def _batch_stats(x):
  """Per-channel mean and (biased) variance over every axis but the last."""
  axes = tuple(range(x.ndim - 1))
  mean = jnp.mean(x, axes)
  return mean, jnp.maximum(jnp.mean(jnp.square(x), axes) - jnp.square(mean), 0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm_train(x, scale, bias, epsilon: float, dtype):
  """Training-mode BatchNorm: ``(y, batch mean, batch variance)``.

  Same result as ``flax.linen.BatchNorm`` (fast variance, float32 statistics)
  with a hand-written backward pass: two per-channel sums and one elementwise
  pass, fewer passes over the activations than autodiff of the forward pass
  takes on XLA:CPU (``benchmarks/batchnorm.py``; figures in
  ``benchmarks/README.md``). ``tests/test_layers.py`` checks the gradients
  against flax's.
  """
  return _batch_norm_fwd(x, scale, bias, epsilon, dtype)[0]


def _batch_norm_fwd(x, scale, bias, epsilon, dtype):
  x32 = x.astype(jnp.float32)
  mean, var = _batch_stats(x32)
  inv = lax.rsqrt(var + epsilon)
  y = ((x32 - mean) * (inv * scale) + bias).astype(dtype)
  return (y, mean, var), (x, mean, inv, scale)


@jax.named_scope('batchnorm')
def _batch_norm_bwd(epsilon, dtype, residuals, cotangents):
  del epsilon, dtype
  x, mean, inv, scale = residuals
  dy = cotangents[0].astype(jnp.float32)  # the statistics get no gradient
  axes = tuple(range(x.ndim - 1))
  x_hat = (x.astype(jnp.float32) - mean) * inv
  d_bias = jnp.sum(dy, axes)
  d_scale = jnp.sum(dy * x_hat, axes)
  count = x.size // x.shape[-1]
  dx = (scale * inv / count) * (count * dy - d_bias - x_hat * d_scale)
  return dx.astype(x.dtype), d_scale, d_bias


batch_norm_train.defvjp(_batch_norm_fwd, _batch_norm_bwd)


class BatchNorm(nn.Module):
  """BatchNorm over the last axis with ``flax.linen.BatchNorm``'s variables.

  Params ``scale``/``bias`` and ``batch_stats`` ``mean``/``var`` (float32)
  are named and updated as in flax (``ra = momentum * ra + (1 - momentum) *
  batch``), so checkpoints and the torch twin load either; training uses
  ``batch_norm_train``'s faster backward pass, or oneDNN's kernel where
  ``kernels`` run on oneDNN. The result keeps x's dtype unless ``dtype`` is set.

  Under ``jax.jit`` the batch statistics are global: the batch is sharded
  over the mesh's ``data`` axis and the mean is a reduction over a global
  array, so XLA inserts the cross-device all-reduce and no ``axis_name`` is
  needed (unlike pmap).
  """
  use_running_average: bool = False
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Dtype | None = None
  relu: bool = False  # a ReLU after the affine map (fused on oneDNN)
  # The model's kernels: oneDNN's BatchNorm trains where they say so.
  kernels: Kernels = XLA

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (features,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (features,), jnp.float32)
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,),
                            jnp.float32)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, (features,),
                           jnp.float32)
    dtype = jnp.dtype(self.dtype or x.dtype)
    relu = nn.relu if self.relu else lambda y: y
    if self.use_running_average:
      with jax.named_scope('batchnorm'):
        inv = lax.rsqrt(ra_var.value + self.epsilon) * scale
        return relu(((x.astype(jnp.float32) - ra_mean.value) * inv
                     + bias).astype(dtype))
    if dtype == x.dtype and self.kernels.bn_on_onednn(
        x.shape, x.dtype, self.epsilon, self.relu):
      y, mean, var = onednn.batch_norm(x, scale, bias, self.epsilon,
                                       self.relu)
    else:
      with jax.named_scope('batchnorm'):
        y, mean, var = batch_norm_train(x, scale, bias, self.epsilon, dtype)
      y = relu(y)
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y
