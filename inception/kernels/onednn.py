"""Convolutions, max pooling and BatchNorm on oneDNN, from XLA:CPU via the FFI.

XLA:CPU's own convolutions and thin GEMMs run well below the CPU's peak,
most of all in the backward pass; PyTorch's CPU convolutions are oneDNN's.
``conv2d`` runs the forward pass and both gradients as oneDNN convolutions
(``onednn/csrc/onednn_conv.cc``, the optional ``inception-onednn`` package:
``make install``),
NHWC in and out, so nothing around them changes. With ``compute_dtype=bfloat16``
the operands are bf16 and the products accumulate in float32; the result and
the input gradient come out in x's dtype (float32, or bf16 for bf16
activations). ``max_pool`` keeps oneDNN's argmax record (its workspace) from
the forward pass for the backward pass (``onednn/csrc/onednn_pool.cc``);
``avg_pool`` averages what each window covers of the input.
``batch_norm`` is training-mode BatchNorm with an optional fused ReLU, whose
mask is likewise kept (``onednn/csrc/onednn_bnorm.cc``).

The kernels are optional: ``available()`` is False where the extension was
not installed (no oneDNN for the platform) or fails its checks, and
``conv_impl='auto'`` then keeps XLA's kernels (``warn_unavailable``).

The library is loaded only after it passes the checks of its build manifest
(``onednn/setup.py`` writes it): its exact file name, size and SHA-256, the ABI
version, and the jaxlib it was built against; then its own ABI and jaxlib
symbols. A truncated, foreign or stale file is never handed to the dynamic
loader, which could crash the interpreter.
"""
import ctypes
import functools
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import platform
import sys

from absl import logging
from flax.linen import pooling as flax_pooling
import jax
import jax.numpy as jnp
from jax import lax
import jaxlib.version
import numpy as np

# Must equal onednn/setup.py's ABI_VERSION.
ABI_VERSION = 5
_PACKAGE = 'inception_onednn'  # the optional package the library comes in
_NAME = '_kernels'
_MANIFEST_SUFFIX = '.manifest.json'
HOW_TO_BUILD = ('make install (or pip install --no-build-isolation ./onednn '
                'on x86-64 Linux)')

_TARGETS = {
    'fwd': ('inception_onednn_conv_fwd', 'InceptionOnednnConvFwd'),
    'fwd_bias': ('inception_onednn_conv_fwd_bias', 'InceptionOnednnConvFwdBias'),
    'bwd_data': ('inception_onednn_conv_bwd_data',
                 'InceptionOnednnConvBwdData'),
    'bwd_weights': ('inception_onednn_conv_bwd_weights',
                    'InceptionOnednnConvBwdWeights'),
    'pool_fwd': ('inception_onednn_max_pool_fwd', 'InceptionOnednnMaxPoolFwd'),
    'pool_bwd': ('inception_onednn_max_pool_bwd', 'InceptionOnednnMaxPoolBwd'),
    'avg_pool_fwd': ('inception_onednn_avg_pool_fwd',
                     'InceptionOnednnAvgPoolFwd'),
    'avg_pool_bwd': ('inception_onednn_avg_pool_bwd',
                     'InceptionOnednnAvgPoolBwd'),
    'norm_fwd': ('inception_onednn_batch_norm_fwd',
                 'InceptionOnednnBatchNormFwd'),
    'norm_bwd': ('inception_onednn_batch_norm_bwd',
                 'InceptionOnednnBatchNormBwd'),
}
_QUERIES = ('InceptionOnednnAbiVersion', 'InceptionOnednnJaxlibVersion',
            'InceptionOnednnCpuIsa',
            'InceptionOnednnMaxPoolWorkspaceBytes',
            'InceptionOnednnBatchNormWorkspaceBytes')


def library_path() -> str:
  """The one file the library may be: in the ``inception_onednn`` package,
  named with this Python's extension suffix ('' where the package is absent).
  """
  spec = importlib.util.find_spec(_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    return ''
  here = list(spec.submodule_search_locations)[0]
  return os.path.join(here, _NAME + importlib.machinery.EXTENSION_SUFFIXES[0])


def _builds_here() -> bool:
  """Whether the oneDNN kernels are built on this platform (make install)."""
  return sys.platform == 'linux' and platform.machine() == 'x86_64'


def _check_file(path: str) -> str:
  """'' if the file at ``path`` is the one its manifest describes, else why."""
  try:
    with open(path + _MANIFEST_SUFFIX) as f:
      manifest = json.load(f)
  except (OSError, ValueError):
    return f'{path} has no readable build manifest ({_MANIFEST_SUFFIX})'
  if not isinstance(manifest, dict) or not {
      'size', 'sha256', 'abi', 'jaxlib'} <= set(manifest):
    return f'the build manifest of {path} is incomplete'
  if manifest['abi'] != ABI_VERSION:
    return (f'{path} is stale: ABI {manifest["abi"]}, this code needs '
            f'{ABI_VERSION}')
  if manifest['jaxlib'] != jaxlib.version.__version__:
    return (f'{path} was built against jaxlib {manifest["jaxlib"]}, this is '
            f'{jaxlib.version.__version__}')
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    return f'{path} cannot be read ({e.strerror})'
  if (len(data) != manifest['size']
      or hashlib.sha256(data).hexdigest() != manifest['sha256']):
    return f'{path} is truncated or was replaced after it was built'
  return ''


@functools.cache
def _load():
  """``(library, '')``, or ``(None, why not)``; registers the handlers once."""
  path = library_path()
  if not path:
    return None, f'the {_PACKAGE} package is not installed'
  if not os.path.exists(path):
    return None, f'{os.path.basename(path)} is not built'
  why = _check_file(path)
  if why:
    return None, why
  try:
    lib = ctypes.CDLL(path)
  except OSError as e:  # e.g. libdnnl is gone
    return None, f'{path} cannot be loaded ({e})'
  symbols = [symbol for _, symbol in _TARGETS.values()] + list(_QUERIES)
  missing = [symbol for symbol in symbols if not hasattr(lib, symbol)]
  if missing:
    return None, f'{path} is stale: it lacks {missing[0]}'
  lib.InceptionOnednnAbiVersion.restype = ctypes.c_int64
  lib.InceptionOnednnJaxlibVersion.restype = ctypes.c_char_p
  lib.InceptionOnednnCpuIsa.restype = ctypes.c_char_p
  if (lib.InceptionOnednnAbiVersion() != ABI_VERSION
      or lib.InceptionOnednnJaxlibVersion().decode()
      != jaxlib.version.__version__):
    return None, f'{path} does not match its build manifest'
  for name, symbol in _TARGETS.values():
    jax.ffi.register_ffi_target(
        name, jax.ffi.pycapsule(getattr(lib, symbol)), platform='cpu')
  lib.InceptionOnednnMaxPoolWorkspaceBytes.restype = ctypes.c_int64
  lib.InceptionOnednnMaxPoolWorkspaceBytes.argtypes = [ctypes.c_int64] * 13
  lib.InceptionOnednnBatchNormWorkspaceBytes.restype = ctypes.c_int64
  lib.InceptionOnednnBatchNormWorkspaceBytes.argtypes = (
      [ctypes.c_int64] * 6 + [ctypes.c_float, ctypes.POINTER(ctypes.c_int64)])
  return lib, ''


def _library():
  return _load()[0]


def _register() -> bool:
  return _library() is not None


def available() -> bool:
  """Whether the oneDNN kernels can run here (built, intact, on CPU)."""
  return jax.default_backend() == 'cpu' and _register()


def cpu_isa() -> str:
  """The instruction set oneDNN's kernels run on here ('' if unavailable).

  ``'avx512_core_amx'``: bf16 products on AMX tiles; ``'avx512_core_bf16'``:
  on AVX-512 BF16 dot products.
  """
  return _library().InceptionOnednnCpuIsa().decode() if available() else ''


@functools.cache
def supports_bf16() -> bool:
  """Whether oneDNN creates bf16 primitives on this CPU.

  It needs AVX-512 (or newer) for them; on an AVX2-only CPU it refuses every
  bf16 convolution and pooling. Probed once with a small bf16 max pooling.
  """
  if not available():
    return False
  geometry = _pool_geometry((1, 4, 4, 16), 2, 2, ((0, 0), (0, 0)))
  return _library().InceptionOnednnMaxPoolWorkspaceBytes(*geometry, True) >= 0


def unavailable_reason() -> str:
  """Why ``available()`` is False, in words ('' when it is True)."""
  if jax.default_backend() != 'cpu':
    return f'the backend is {jax.default_backend()}, not the CPU'
  return _load()[1]


@functools.cache
def warn_unavailable() -> None:
  """Says once why ``'auto'`` keeps XLA's kernels on a CPU that builds oneDNN.

  Silent off the CPU, and where the kernels are never built and none are
  there.
  """
  if jax.default_backend() != 'cpu':
    return
  why, path = unavailable_reason(), library_path()
  if why and (_builds_here() or (path and os.path.exists(path))):
    logging.warning("oneDNN kernels off (%s): using XLA's. Build them with "
                    '%s.', why, HOW_TO_BUILD)


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
    raise RuntimeError(f'oneDNN kernels unavailable: {_load()[1]}; '
                       f'{HOW_TO_BUILD}')
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


def _conv_operands(x, kernel, strides, padding, compute_dtype):
  """x and the kernel in the compute dtype, and the result's shape/dtype."""
  cd = compute_dtype or x.dtype
  xc, wc = _cast(x, cd), _cast(kernel, cd)
  n, h, w, _ = x.shape
  k, kw, _, cout = kernel.shape
  ho = _out_hw(h, k, strides, *padding[0])
  wo = _out_hw(w, kw, strides, *padding[1])
  return xc, wc, jax.ShapeDtypeStruct((n, ho, wo, cout),
                                      _result(x.dtype, xc.dtype))


def _conv_fwd(x, kernel, strides, padding, compute_dtype):
  xc, wc, out = _conv_operands(x, kernel, strides, padding, compute_dtype)
  y = _call('fwd', out, xc, wc, **_window(padding, strides))
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


# conv(x, kernel) + bias, then ReLU if ``relu``: one oneDNN convolution with
# the bias and the ReLU in its epilogue, so the activations are written once.
# The backward pass masks dy by the result (ReLU's gradient) and sums it for
# the bias; the two gradient convolutions are ``_conv_bwd``'s.
@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def _conv_bias(x, kernel, bias, strides, padding, compute_dtype, relu):
  return _conv_bias_fwd(x, kernel, bias, strides, padding, compute_dtype,
                        relu)[0]


def _conv_bias_fwd(x, kernel, bias, strides, padding, compute_dtype, relu):
  xc, wc, out = _conv_operands(x, kernel, strides, padding, compute_dtype)
  y = _call('fwd_bias', out, xc, wc, bias.astype(jnp.float32), relu=int(relu),
            **_window(padding, strides)).astype(x.dtype)
  # The result is kept only for ReLU's mask.
  return y, (xc, wc, y if relu else jnp.zeros((), x.dtype),
             jnp.zeros((), x.dtype), jnp.zeros((), kernel.dtype),
             jnp.zeros((), bias.dtype))


@jax.named_scope('onednn_conv')
def _conv_bias_bwd(strides, padding, compute_dtype, relu, residuals, dy):
  xc, wc, y, x_like, w_like, b_like = residuals
  if relu:
    dy = jnp.where(y > 0, dy, jnp.zeros((), dy.dtype))
  db = jnp.sum(dy, axis=(0, 1, 2), dtype=jnp.float32)
  dx, dw = _conv_bwd(strides, padding, compute_dtype,
                     (xc, wc, x_like, w_like), dy)
  return dx, dw, db.astype(b_like.dtype)


_conv_bias.defvjp(_conv_bias_fwd, _conv_bias_bwd)


@jax.named_scope('onednn_conv')
def conv2d(x, kernel, strides: int, padding, compute_dtype=None, bias=None,
           relu: bool = False):
  """NHWC x HWIO convolution on oneDNN, returned in x's dtype.

  With ``bias`` (and ``relu``), the bias and the ReLU run inside the
  convolution, where the result is still in cache: no pass of their own.
  Geometries the handlers do not take (``window_fits``: a window outside
  the padded input, or padding as wide as the kernel) run on XLA.

  Args:
    x: [N, H, W, C_in], float32 or bfloat16.
    kernel: [kh, kw, C_in, C_out].
    strides: the same stride along H and W.
    padding: ``'SAME'``, ``'VALID'`` or ((top, bottom), (left, right)).
    compute_dtype: the operands' dtype (e.g. bfloat16); products accumulate
      in float32. None: x's dtype.
    bias: [C_out] added to the result, or None.
    relu: apply a ReLU last. An output channel whose kernel or bias is not
      finite is NaN, as with ``jax.nn.relu`` (the fused ReLU alone would map
      NaN to 0).
  """
  if bias is None and relu:
    bias = jnp.zeros(kernel.shape[-1:], jnp.float32)
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(x.shape[1:3], kernel.shape[:2],
                                  (strides, strides), padding)
  padding = tuple(tuple(int(p) for p in pair) for pair in padding)
  if compute_dtype is not None:
    compute_dtype = jnp.dtype(compute_dtype)
  strides = int(strides)
  if not all(window_fits(size, k, strides, *pads) for size, k, pads in zip(
      x.shape[1:3], kernel.shape[:2], padding)):
    cd = compute_dtype or x.dtype
    y = lax.conv_general_dilated(
        _cast(x, cd), _cast(kernel, cd), (strides, strides), padding,
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
        preferred_element_type=jnp.float32).astype(x.dtype)
    if bias is not None:
      y = y + bias.astype(y.dtype)
    return jax.nn.relu(y) if relu else y
  if bias is None:
    return _conv(x, kernel, strides, padding, compute_dtype)
  # oneDNN's fused ReLU maps NaN to 0, where jax.nn.relu keeps it; the
  # handler sets every output channel whose kernel or bias is not finite to
  # NaN, so a network whose parameters went non-finite still shows it in its
  # loss (no lax.cond around the call: its operand copies cost more than the
  # fusion saves).
  return _conv_bias(x, kernel, bias, strides=strides, padding=padding,
                    compute_dtype=compute_dtype, relu=bool(relu))


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
  window's first maximum in row-major order, as XLA's does. oneDNN's maximum
  skips NaNs where XLA's propagates them, so the handler sets every output
  whose window holds a NaN to NaN: the result is the reference's. Shapes
  whose windows do not fit (``window_fits``) run on XLA.
  """
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(x.shape[1:3], (window, window),
                                  (strides, strides), padding)
  padding = tuple(tuple(int(p) for p in pair) for pair in padding)
  window, strides = int(window), int(strides)

  def reference(x):
    return lax.reduce_window(
        x, -jnp.inf, lax.max, (1, window, window, 1),
        (1, strides, strides, 1), ((0, 0),) + padding + ((0, 0),))

  if not all(window_fits(size, window, strides, *pads)
             for size, pads in zip(x.shape[1:3], padding)):
    return reference(x)
  # The handler sets every output whose window holds a NaN to NaN.
  return _max_pool(x, window, strides, padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _avg_pool(x, window, strides, padding):
  return _avg_pool_fwd(x, window, strides, padding)[0]


def _avg_pool_fwd(x, window, strides, padding):
  n, _, _, c, ho, wo = _pool_geometry(x.shape, window, strides, padding)[:6]
  y = _call('avg_pool_fwd', jax.ShapeDtypeStruct((n, ho, wo, c), x.dtype), x,
            window=window, **_window(padding, strides))
  # Residuals must be arrays: an empty one carries x's N, H, W.
  return y, jnp.zeros(x.shape[:3] + (0,), x.dtype)


@jax.named_scope('avg_pool')
def _avg_pool_bwd(window, strides, padding, x_like, dy):
  dx = jax.ShapeDtypeStruct(x_like.shape[:3] + dy.shape[3:], dy.dtype)
  return (_call('avg_pool_bwd', dx, dy, window=window,
                **_window(padding, strides)),)


_avg_pool.defvjp(_avg_pool_fwd, _avg_pool_bwd)


@jax.named_scope('avg_pool')
def avg_pool(x, window: int, strides: int, padding):
  """Square average pooling of a float32 or bfloat16 NHWC array on oneDNN.

  Each window averages the input it covers; padding is not counted (flax's
  ``avg_pool(..., count_include_pad=False)``). Shapes whose windows do not
  fit (``window_fits``) run on XLA.
  """
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(x.shape[1:3], (window, window),
                                  (strides, strides), padding)
  padding = tuple(tuple(int(p) for p in pair) for pair in padding)
  window, strides = int(window), int(strides)
  if not all(window_fits(size, window, strides, *pads)
             for size, pads in zip(x.shape[1:3], padding)):
    return flax_pooling.avg_pool(x, (window, window), (strides, strides),
                                 padding, count_include_pad=False).astype(
                                     x.dtype)
  return _avg_pool(x, window, strides, padding)


def window_fits(size: int, window: int, stride: int, lo: int, hi: int) -> bool:
  """Whether the handlers take this spatial geometry (onednn_common.h).

  Every window must overlap the input, and padding must be smaller than
  the window; the handlers refuse anything else with an error.
  """
  return (size >= 1 and window >= 1 and stride >= 1 and 0 <= lo < window
          and 0 <= hi < window and size + lo + hi >= window)


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
    and without gradient, as ``inception.kernels.batchnorm.batch_norm_train``.
  """
  if x.ndim != 4:
    raise ValueError(f'oneDNN batch norm takes NHWC arrays, got {x.shape}')
  scale, bias = scale.astype(jnp.float32), bias.astype(jnp.float32)
  y, mean, var = _batch_norm(x, scale, bias, float(epsilon), bool(relu))
  # With the ReLU, the handler sets a channel whose statistics or affine
  # parameters are not finite to NaN, as the reference (BatchNorm, then
  # jax.nn.relu) gives; the fused ReLU alone would map NaN to 0.
  return y, mean, var
