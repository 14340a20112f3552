"""The matrix multiply behind every 1x1, im2col and dense layer, with its own VJP.

Two reasons to own it rather than let JAX differentiate a 4-D ``dot_general``:

* XLA:CPU turns the transpose of a 4-D contraction into transposes around
  thin GEMMs. Here the forward pass and both gradients are single 2-D GEMMs
  over all N*H*W rows: ``dx = dy @ w.T`` and ``dw = x.T @ dy``.
* Mixed precision that pays. With ``compute_dtype=bfloat16`` the operands
  are cast to bfloat16 and the products accumulate, and come out, in float32
  (``preferred_element_type``), forward and backward. That is the only bf16
  GEMM XLA:CPU runs faster than fp32 (a bf16 output is slower than fp32; see
  ``benchmarks/README.md``); on GPU and TPU it is the usual mixed-precision
  GEMM. Everything around the GEMM (BatchNorm, ReLU, pooling, the loss)
  stays in the activations' dtype, float32 on this path
  (``backend.activation_dtype``).
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax

_ROWS_BY_K = (((1,), (0,)), ((), ()))  # [M, K] x [K, N]
_K_BY_ROWS = (((0,), (0,)), ((), ()))  # [M, K]^T x [M, N]
_ROWS_BY_N = (((1,), (1,)), ((), ()))  # [M, N] x [K, N]^T


def _cast(a, dtype):
  return a if dtype is None or a.dtype == dtype else a.astype(dtype)


def _dot(a, b, dims, out_dtype):
  """``dot_general`` accumulating in float32 at least, returned as ``out_dtype``."""
  acc = jnp.promote_types(out_dtype, jnp.float32)
  return lax.dot_general(a, b, dims, preferred_element_type=acc).astype(
      out_dtype)


# The dtypes ride as static arguments: residuals must be arrays.
@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _matmul2d(x, w, compute_dtype, x_dtype, w_dtype):
  return _matmul2d_fwd(x, w, compute_dtype, x_dtype, w_dtype)[0]


def _matmul2d_fwd(x, w, compute_dtype, x_dtype, w_dtype):
  del w_dtype
  xc, wc = _cast(x, compute_dtype), _cast(w, compute_dtype)
  # Residuals in the compute dtype: bf16 halves what the backward pass keeps.
  return _dot(xc, wc, _ROWS_BY_K, x_dtype), (xc, wc)


@jax.named_scope('gemm')
def _matmul2d_bwd(compute_dtype, x_dtype, w_dtype, residuals, dy):
  xc, wc = residuals
  dyc = _cast(dy, compute_dtype)
  dx = _dot(dyc, wc, _ROWS_BY_N, x_dtype)
  dw = _dot(xc, dyc, _K_BY_ROWS, w_dtype)
  return dx, dw


_matmul2d.defvjp(_matmul2d_fwd, _matmul2d_bwd)


@jax.named_scope('gemm')  # the op class in benchmarks/profile_step.py
def matmul(x, w, compute_dtype=None):
  """``x [..., K] @ w [K, N] -> [..., N]`` in x's dtype, as one 2-D GEMM.

  Args:
    x: activations; every leading axis is flattened into GEMM rows.
    w: the weight matrix (kept in its own dtype, e.g. float32).
    compute_dtype: dtype of the GEMM operands (e.g. ``jnp.bfloat16``); None
      multiplies in x's dtype. Accumulation is float32 or wider.

  Returns:
    The product, shaped ``x.shape[:-1] + (N,)``, in x's dtype.
  """
  if compute_dtype is not None:
    compute_dtype = jnp.dtype(compute_dtype)
  rows = x.reshape(-1, x.shape[-1])
  y = _matmul2d(rows, w, compute_dtype, rows.dtype, w.dtype)
  return y.reshape(*x.shape[:-1], w.shape[-1])
