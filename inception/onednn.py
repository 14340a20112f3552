"""Convolutions and max pooling on oneDNN, called from XLA:CPU through the FFI.

XLA:CPU's own convolutions and thin GEMMs run well below the CPU's peak,
most of all in the backward pass; PyTorch's CPU convolutions are oneDNN's.
``conv2d`` runs the forward pass and both gradients as oneDNN convolutions
(``inception/csrc/onednn_conv.cc``, built by ``setup.py``: ``make install``),
NHWC in and out, so nothing around them changes. With ``compute_dtype=bfloat16`` the
operands are bf16 and the products accumulate, and come out, in float32.
``max_pool`` keeps oneDNN's argmax record (its workspace) from the forward
pass for the backward pass (``inception/csrc/onednn_pool.cc``).

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
  lib.InceptionOnednnMaxPoolWorkspaceBytes.argtypes = [ctypes.c_int64] * 12
  return lib


def _register() -> bool:
  return _library() is not None


def available() -> bool:
  """Whether the oneDNN kernels can run here (built, loadable, on CPU)."""
  return jax.default_backend() == 'cpu' and _register()


def _attrs(padding, strides):
  (pt, pb), (pl, pr) = padding
  return dict(stride=np.int64(strides), pad_top=np.int64(pt),
              pad_bottom=np.int64(pb), pad_left=np.int64(pl),
              pad_right=np.int64(pr))


def _call(which, out_shape, *operands, padding, strides, **attrs):
  """Calls one handler; ``out_shape``: a shape (one f32 result) or a list."""
  if not _register():
    raise RuntimeError('the oneDNN extension is not built (make install, or '
                       'pip install --no-build-isolation -e . on x86-64 Linux)')
  if isinstance(out_shape, tuple):
    out_shape = jax.ShapeDtypeStruct(out_shape, jnp.float32)
  return jax.ffi.ffi_call(_TARGETS[which][0], out_shape)(
      *operands, **_attrs(padding, strides),
      **{k: np.int64(v) for k, v in attrs.items()})


def _cast(a, dtype):
  return a if dtype is None or a.dtype == dtype else a.astype(dtype)


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
  y = _call('fwd', (n, ho, wo, cout), xc, wc, padding=padding,
            strides=strides)
  return y.astype(x.dtype), (xc, wc, jnp.zeros((), x.dtype),
                             jnp.zeros((), kernel.dtype))


@jax.named_scope('onednn_conv')
def _conv_bwd(strides, padding, compute_dtype, residuals, dy):
  xc, wc, x_like, w_like = residuals
  dyc = dy.astype(xc.dtype)
  dx = _call('bwd_data', xc.shape, dyc, wc, padding=padding, strides=strides)
  dw = _call('bwd_weights', wc.shape, xc, dyc, padding=padding,
             strides=strides)
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
  bytes_ = _library().InceptionOnednnMaxPoolWorkspaceBytes(*geometry)
  if bytes_ < 0:
    raise ValueError(f'oneDNN refuses max pooling {x.shape} with window '
                     f'{window}, stride {strides}, padding {padding}')
  y, workspace = _call(
      'pool_fwd', [jax.ShapeDtypeStruct((n, ho, wo, c), jnp.float32),
                   jax.ShapeDtypeStruct((bytes_,), jnp.uint8)],
      x, padding=padding, strides=strides, window=window)
  # Residuals must be arrays: an empty one carries x's N, H, W.
  return y, (workspace, jnp.zeros(x.shape[:3] + (0,), x.dtype))


@jax.named_scope('max_pool')
def _max_pool_bwd(window, strides, padding, residuals, dy):
  workspace, x_like = residuals
  return (_call('pool_bwd', x_like.shape[:3] + dy.shape[3:], dy, workspace, padding=padding,
                strides=strides, window=window),)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


@jax.named_scope('max_pool')
def max_pool(x, window: int, strides: int, padding):
  """Square max pooling of a float32 NHWC array on oneDNN.

  Padded positions never win (XLA's -inf padding); the gradient goes to each
  window's first maximum in row-major order, as XLA's does.
  """
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(x.shape[1:3], (window, window),
                                  (strides, strides), padding)
  padding = tuple(tuple(int(p) for p in pair) for pair in padding)
  return _max_pool(x, int(window), int(strides), padding)
