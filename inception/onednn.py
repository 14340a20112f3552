"""Convolutions, max pooling and BatchNorm on oneDNN, from XLA:CPU via the FFI.

XLA:CPU's own convolutions and thin GEMMs run well below the CPU's peak,
most of all in the backward pass; PyTorch's CPU convolutions are oneDNN's.
``conv2d`` runs the forward pass and both gradients as oneDNN convolutions
(``inception/csrc/onednn_conv.cc``, built by ``setup.py``: ``make install``),
NHWC in and out, so nothing around them changes. With ``compute_dtype=bfloat16``
the operands are bf16 and the products accumulate in float32; the result and
the input gradient come out in x's dtype (float32, or bf16 for bf16
activations). ``max_pool`` keeps oneDNN's argmax record (its workspace) from
the forward pass for the backward pass (``inception/csrc/onednn_pool.cc``).
``batch_norm`` is training-mode BatchNorm with an optional fused ReLU, whose
mask is likewise kept (``inception/csrc/onednn_bnorm.cc``).

The kernels are optional: ``available()`` is False where the extension was
not built (no oneDNN for the platform) and ``conv_impl='auto'`` then keeps
XLA's kernels.
"""
import ctypes
import functools
import glob
import os

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

_TARGETS = {
    'fwd': ('inception_onednn_conv_fwd', 'InceptionOnednnConvFwd'),
    'bwd_data': ('inception_onednn_conv_bwd_data',
                 'InceptionOnednnConvBwdData'),
    'bwd_weights': ('inception_onednn_conv_bwd_weights',
                    'InceptionOnednnConvBwdWeights'),
    'pool_fwd': ('inception_onednn_max_pool_fwd', 'InceptionOnednnMaxPoolFwd'),
    'pool_bwd': ('inception_onednn_max_pool_bwd', 'InceptionOnednnMaxPoolBwd'),
    'norm_fwd': ('inception_onednn_batch_norm_fwd',
                 'InceptionOnednnBatchNormFwd'),
    'norm_bwd': ('inception_onednn_batch_norm_bwd',
                 'InceptionOnednnBatchNormBwd'),
}


def _library_path():
  here = os.path.dirname(os.path.abspath(__file__))
  found = sorted(glob.glob(os.path.join(here, '_onednn_conv*.so')))
  return found[0] if found else None


@functools.cache
def _library():
  """Loads the extension and registers its handlers with XLA:CPU, once."""
  path = _library_path()
  if path is None:
    return None
  try:
    lib = ctypes.cdll.LoadLibrary(path)
  except OSError:  # built, but libdnnl is gone: keep XLA's kernels
    return None
  for name, symbol in _TARGETS.values():
    jax.ffi.register_ffi_target(
        name, jax.ffi.pycapsule(getattr(lib, symbol)), platform='cpu')
  lib.InceptionOnednnMaxPoolWorkspaceBytes.restype = ctypes.c_int64
  lib.InceptionOnednnMaxPoolWorkspaceBytes.argtypes = [ctypes.c_int64] * 13
  lib.InceptionOnednnBatchNormWorkspaceBytes.restype = ctypes.c_int64
  lib.InceptionOnednnBatchNormWorkspaceBytes.argtypes = (
      [ctypes.c_int64] * 6 + [ctypes.c_float, ctypes.POINTER(ctypes.c_int64)])
  return lib


def _register() -> bool:
  return _library() is not None


def available() -> bool:
  """Whether the oneDNN kernels can run here (built, loadable, on CPU)."""
  return jax.default_backend() == 'cpu' and _register()


def _window(padding, strides):
  """The window attributes of the conv and pool handlers."""
  (pt, pb), (pl, pr) = padding
  return dict(stride=strides, pad_top=pt, pad_bottom=pb, pad_left=pl,
              pad_right=pr)


def _call(which, out_shape, *operands, **attrs):
  """Calls one handler; ``out_shape``: a ShapeDtypeStruct or a list of them.

  Integer attributes go as int64 and floats as float32, the handlers' types.
  """
  if not _register():
    raise RuntimeError('the oneDNN extension is not built (make install, or '
                       'pip install --no-build-isolation -e . on x86-64 Linux)')
  typed = {k: np.float32(v) if isinstance(v, float) else np.int64(v)
           for k, v in attrs.items()}
  return jax.ffi.ffi_call(_TARGETS[which][0], out_shape)(*operands, **typed)


def _cast(a, dtype):
  return a if dtype is None or a.dtype == dtype else a.astype(dtype)


def _result(dtype, operands):
  """A conv's result dtype for activations of ``dtype``: bf16 or f32.

  bf16 only from bf16 operands: oneDNN has no f32 x f32 -> bf16 convolution.
  """
  bf16 = dtype == jnp.bfloat16 and operands == jnp.bfloat16
  return jnp.dtype(jnp.bfloat16 if bf16 else jnp.float32)


def _out_hw(size, k, stride, lo, hi):
  return (size + lo + hi - k) // stride + 1


# padding is a tuple of tuples and the dtypes are static: residuals must be
# arrays.
@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, kernel, strides, padding, compute_dtype):
  return _conv_fwd(x, kernel, strides, padding, compute_dtype)[0]


def _conv_fwd(x, kernel, strides, padding, compute_dtype):
  cd = compute_dtype or x.dtype
  xc, wc = _cast(x, cd), _cast(kernel, cd)
  n, h, w, _ = x.shape
  k, kw, _, cout = kernel.shape
  ho = _out_hw(h, k, strides, *padding[0])
  wo = _out_hw(w, kw, strides, *padding[1])
  y = _call('fwd', jax.ShapeDtypeStruct((n, ho, wo, cout),
                                        _result(x.dtype, xc.dtype)),
            xc, wc, **_window(padding, strides))
  return y.astype(x.dtype), (xc, wc, jnp.zeros((), x.dtype),
                             jnp.zeros((), kernel.dtype))


@jax.named_scope('onednn_conv')
def _conv_bwd(strides, padding, compute_dtype, residuals, dy):
  xc, wc, x_like, w_like = residuals
  dyc = dy.astype(xc.dtype)
  window = _window(padding, strides)
  dx = _call('bwd_data', jax.ShapeDtypeStruct(
      xc.shape, _result(x_like.dtype, xc.dtype)), dyc, wc, **window)
  dw = _call('bwd_weights', jax.ShapeDtypeStruct(wc.shape, jnp.float32), xc,
             dyc, **window)
  return dx.astype(x_like.dtype), dw.astype(w_like.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


@jax.named_scope('onednn_conv')
def conv2d(x, kernel, strides: int, padding, compute_dtype=None):
  """NHWC x HWIO convolution on oneDNN, returned in x's dtype.

  Args:
    x: [N, H, W, C_in], float32 or bfloat16.
    kernel: [kh, kw, C_in, C_out].
    strides: the same stride along H and W.
    padding: ``'SAME'``, ``'VALID'`` or ((top, bottom), (left, right)).
    compute_dtype: the operands' dtype (e.g. bfloat16); products accumulate
      in float32. None: x's dtype.
  """
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(x.shape[1:3], kernel.shape[:2],
                                  (strides, strides), padding)
  padding = tuple(tuple(int(p) for p in pair) for pair in padding)
  if compute_dtype is not None:
    compute_dtype = jnp.dtype(compute_dtype)
  return _conv(x, kernel, int(strides), padding, compute_dtype)


def _pool_geometry(x_shape, window, strides, padding):
  (pt, pb), (pl, pr) = padding
  n, h, w, c = x_shape
  return (n, h, w, c, _out_hw(h, window, strides, pt, pb),
          _out_hw(w, window, strides, pl, pr), window, strides, pt, pb, pl, pr)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, window, strides, padding):
  return _max_pool_fwd(x, window, strides, padding)[0]


def _max_pool_fwd(x, window, strides, padding):
  geometry = _pool_geometry(x.shape, window, strides, padding)
  n, _, _, c, ho, wo = geometry[:6]
  bytes_ = _library().InceptionOnednnMaxPoolWorkspaceBytes(
      *geometry, x.dtype == jnp.bfloat16)
  if bytes_ < 0:
    raise ValueError(f'oneDNN refuses max pooling {x.shape} with window '
                     f'{window}, stride {strides}, padding {padding}')
  y, workspace = _call(
      'pool_fwd', [jax.ShapeDtypeStruct((n, ho, wo, c), x.dtype),
                   jax.ShapeDtypeStruct((bytes_,), jnp.uint8)],
      x, window=window, **_window(padding, strides))
  # Residuals must be arrays: an empty one carries x's N, H, W.
  return y, (workspace, jnp.zeros(x.shape[:3] + (0,), x.dtype))


@jax.named_scope('max_pool')
def _max_pool_bwd(window, strides, padding, residuals, dy):
  workspace, x_like = residuals
  dx = jax.ShapeDtypeStruct(x_like.shape[:3] + dy.shape[3:], dy.dtype)
  return (_call('pool_bwd', dx, dy, workspace, window=window,
                **_window(padding, strides)),)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


@jax.named_scope('max_pool')
def max_pool(x, window: int, strides: int, padding):
  """Square max pooling of a float32 or bfloat16 NHWC array on oneDNN.

  Padded positions never win (XLA's -inf padding); the gradient goes to each
  window's first maximum in row-major order, as XLA's does.
  """
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(x.shape[1:3], (window, window),
                                  (strides, strides), padding)
  padding = tuple(tuple(int(p) for p in pair) for pair in padding)
  return _max_pool(x, int(window), int(strides), padding)


@functools.cache
def _norm_plan(shape, dtype, epsilon, relu):
  """(workspace bytes, JIT kernels?) of oneDNN's BatchNorm for these."""
  if not _register():
    return -1, False
  jit = ctypes.c_int64(0)
  bytes_ = _library().InceptionOnednnBatchNormWorkspaceBytes(
      *shape, jnp.dtype(dtype) == jnp.bfloat16, relu, epsilon,
      ctypes.byref(jit))
  return bytes_, bytes_ >= 0 and bool(jit.value)


def batch_norm_vectorized(shape, dtype, epsilon: float,
                          relu: bool = False) -> bool:
  """Whether oneDNN runs ``batch_norm`` of this NHWC shape on its JIT kernels.

  It falls back to plain loops for channel counts its vector kernels do not
  take (on AVX-512: not a multiple of 16 in bf16, of 8 in f32), many times
  slower than XLA's BatchNorm; callers keep XLA's there.
  """
  return (len(shape) == 4 and jnp.dtype(dtype) in (jnp.float32, jnp.bfloat16)
          and _norm_plan(tuple(shape), jnp.dtype(dtype).name, float(epsilon),
                         bool(relu))[1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _batch_norm(x, scale, bias, epsilon, relu):
  return _batch_norm_fwd(x, scale, bias, epsilon, relu)[0]


def _batch_norm_fwd(x, scale, bias, epsilon, relu):
  stat = jax.ShapeDtypeStruct(x.shape[-1:], jnp.float32)
  bytes_ = _norm_plan(x.shape, x.dtype.name, epsilon, relu)[0]
  if bytes_ < 0:
    raise ValueError(f'oneDNN refuses batch norm of {x.shape} {x.dtype}')
  workspace = jax.ShapeDtypeStruct((bytes_,), jnp.uint8)
  y, mean, var, workspace = _call(
      'norm_fwd', [jax.ShapeDtypeStruct(x.shape, x.dtype), stat, stat,
                   workspace],
      x, scale, bias, epsilon=epsilon, relu=relu)
  return (y, mean, var), (x, mean, var, scale, workspace)


@jax.named_scope('batchnorm')
def _batch_norm_bwd(epsilon, relu, residuals, cotangents):
  x, mean, var, scale, workspace = residuals
  dy = cotangents[0].astype(x.dtype)  # the statistics get no gradient
  stat = jax.ShapeDtypeStruct(x.shape[-1:], jnp.float32)
  return tuple(_call(
      'norm_bwd', [jax.ShapeDtypeStruct(x.shape, x.dtype), stat, stat],
      x, mean, var, dy, scale, workspace, epsilon=epsilon, relu=relu))


_batch_norm.defvjp(_batch_norm_fwd, _batch_norm_bwd)


@jax.named_scope('batchnorm')
def batch_norm(x, scale, bias, epsilon: float, relu: bool = False):
  """Training-mode BatchNorm over the last axis of NHWC ``x`` on oneDNN.

  Args:
    x: [N, H, W, C], float32 or bfloat16; the result has its dtype.
    scale, bias: [C] float32.
    epsilon: added to the variance.
    relu: apply a ReLU to the result, fused (its mask is kept for the
      backward pass).

  Returns:
    ``(y, batch mean, biased batch variance)``, the statistics in float32
    and without gradient, as ``inception.batchnorm.batch_norm_train``.
  """
  if x.ndim != 4:
    raise ValueError(f'oneDNN batch norm takes NHWC arrays, got {x.shape}')
  return _batch_norm(x, scale.astype(jnp.float32), bias.astype(jnp.float32),
                     float(epsilon), bool(relu))
