"""oneDNN handlers never crash the interpreter and compute what XLA computes.

Small spatial sizes, kernels larger than the input, batch 1 and odd strides;
buffers that do not match the geometry are FFI errors; NaNs propagate as in
the reference ops; a truncated, foreign, stale or misnamed library is never
loaded, and 'auto' falls back to XLA with one warning.
"""
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO
import kernel_calls
from inception.kernels import onednn
from inception.kernels.batchnorm import batch_norm_train

needs_onednn = pytest.mark.skipif(
    not onednn.available(), reason='oneDNN extension not built here')


def _grads(fn, *args):
  return jax.jit(jax.grad(lambda *a: jnp.sum(jnp.sin(fn(*a))),
                          argnums=tuple(range(len(args)))))(*args)


# (batch, size, k, stride, padding): outputs smaller than the kernel, 1x1
# inputs under 5x5 and 7x7 kernels (GoogLeNet at 8x8 input), batch 1, odd
# strides, asymmetric padding.
_SMALL = [
    (64, 1, 5, 1, 'SAME'), (64, 1, 3, 1, 'SAME'), (1, 1, 5, 1, 'SAME'),
    (1, 1, 7, 2, 'SAME'), (3, 2, 5, 1, 'SAME'), (2, 2, 3, 2, 'SAME'),
    (2, 3, 7, 3, 'SAME'), (1, 4, 7, 2, ((3, 3), (3, 3))),
    (2, 3, 3, 2, ((0, 2), (2, 0))), (1, 5, 5, 3, 'VALID'),
    (2, 1, 1, 2, 'VALID'), (5, 2, 2, 1, 'SAME'),
]


@needs_onednn
@pytest.mark.parametrize('n,size,k,stride,padding', _SMALL)
def test_conv_at_small_shapes_equals_lax(n, size, k, stride, padding):
  x = jax.random.normal(jax.random.key(0), (n, size, size + 1, 3))
  w = jax.random.normal(jax.random.key(1), (k, k, 3, 4))
  xla = lambda x, w: kernel_calls.conv2d(x, w, stride, padding, 'xla')
  ours = lambda x, w: kernel_calls.conv2d(x, w, stride, padding, 'onednn')
  np.testing.assert_allclose(jax.jit(ours)(x, w), xla(x, w), rtol=1e-4,
                             atol=1e-4)
  for a, b in zip(_grads(ours, x, w), _grads(xla, x, w)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@needs_onednn
@pytest.mark.parametrize('n,size,window,stride,padding', [
    (64, 1, 3, 1, 'SAME'), (1, 1, 3, 2, 'SAME'), (2, 2, 3, 2, 'SAME'),
    (1, 2, 3, 2, ((1, 1), (1, 1))), (3, 3, 2, 3, 'VALID'),
    (1, 5, 3, 2, ((0, 1), (1, 0)))])
def test_max_pool_at_small_shapes_equals_xla(n, size, window, stride,
                                             padding):
  x = jax.random.normal(jax.random.key(2), (n, size, size, 4))
  pool = lambda x, impl: kernel_calls.max_pool(x, window, stride, padding, impl)
  np.testing.assert_array_equal(
      jax.jit(pool, static_argnums=1)(x, 'onednn'), pool(x, 'xla'))
  grad = lambda impl: jax.jit(jax.grad(
      lambda x: jnp.sum(jnp.sin(pool(x, impl)))))(x)
  np.testing.assert_allclose(grad('onednn'), grad('xla'), atol=1e-6)


_GOOGLENET_AT_8X8 = '''
import jax, jax.numpy as jnp
from inception import models
model = models.get_model('googlenet', num_classes=10, width=0.125,
                         conv_impl='onednn')
variables = models.init_variables(model, (8, 8, 1), jax.random.key(0))
x = jax.random.normal(jax.random.key(1), (64, 8, 8, 1))
def loss(p):
  logits, _ = model.apply({**variables, 'params': p}, x, train=True,
                          mutable=['batch_stats'], rngs={'dropout':
                          jax.random.key(2)})
  return jnp.mean(logits ** 2)
step = jax.jit(jax.value_and_grad(loss))
for _ in range(10):
  value, grads = step(variables['params'])
  jax.block_until_ready(grads)
print('ok', float(value))
'''


@needs_onednn
@pytest.mark.slow
def test_googlenet_at_8x8_trains_without_crashing():
  """It segfaulted 3 runs in 3: a primitive's scratchpad belonged to the
  thread that created it, and XLA ran it on another (onednn_common.h)."""
  result = subprocess.run([sys.executable, '-c', _GOOGLENET_AT_8X8],
                          cwd=REPO, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.startswith('ok')


@needs_onednn
def test_mismatched_buffers_are_ffi_errors_not_kernel_runs():
  x = jnp.ones((2, 5, 5, 3))
  w = jnp.ones((3, 3, 3, 4))
  window = dict(stride=1, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1)
  cases = [
      # Output spatial size that the geometry does not give.
      ('fwd', jax.ShapeDtypeStruct((2, 9, 9, 4), jnp.float32), (x, w), window),
      # Channel count that the kernel does not have.
      ('fwd', jax.ShapeDtypeStruct((2, 5, 5, 4), jnp.float32),
       (jnp.ones((2, 5, 5, 2)), w), window),
      # A window outside the padded input.
      ('fwd', jax.ShapeDtypeStruct((2, 1, 1, 4), jnp.float32),
       (jnp.ones((2, 1, 1, 3)), jnp.ones((5, 5, 3, 4))),
       dict(window, pad_top=0, pad_bottom=0, pad_left=0, pad_right=0)),
      # A stride of 0 and negative padding.
      ('fwd', jax.ShapeDtypeStruct((2, 5, 5, 4), jnp.float32), (x, w),
       dict(window, stride=0)),
      ('bwd_data', jax.ShapeDtypeStruct((2, 5, 5, 3), jnp.float32),
       (jnp.ones((2, 5, 5, 4)), w), dict(window, pad_top=-1)),
      # Operands of two dtypes.
      ('fwd', jax.ShapeDtypeStruct((2, 5, 5, 4), jnp.float32),
       (x, w.astype(jnp.bfloat16)), window),
      # A pool whose output batch differs from its input's.
      ('pool_fwd', [jax.ShapeDtypeStruct((3, 5, 5, 3), jnp.float32),
                    jax.ShapeDtypeStruct((4096,), jnp.uint8)], (x,),
       dict(window, window=3)),
      # BatchNorm with a per-channel array of the wrong length.
      ('norm_fwd', [jax.ShapeDtypeStruct((2, 5, 5, 3), jnp.float32)]
       + [jax.ShapeDtypeStruct((3,), jnp.float32)] * 2
       + [jax.ShapeDtypeStruct((0,), jnp.uint8)],
       (x, jnp.ones(4), jnp.ones(3)), dict(epsilon=1e-5, relu=0)),
  ]
  for which, out, operands, attrs in cases:
    with pytest.raises(Exception, match='oneDNN'):
      jax.block_until_ready(jax.jit(
          lambda *a, which=which, out=out, attrs=attrs: onednn._call(  # pylint: disable=protected-access
              which, out, *a, **attrs))(*operands))


def _with_nan(shape, where=(0, 1, 2, 1)):
  x = np.array(jax.random.normal(jax.random.key(3), shape))
  x[where] = np.nan
  return jnp.asarray(x)


@needs_onednn
def test_nan_propagates_through_every_kernel_as_in_xla():
  x = _with_nan((2, 6, 6, 16))
  w = jax.random.normal(jax.random.key(4), (3, 3, 16, 16))
  for padding in ('SAME', 'VALID'):
    np.testing.assert_array_equal(
        np.isnan(jax.jit(lambda x, w: kernel_calls.conv2d(
            x, w, 1, padding, 'onednn'))(x, w)),
        np.isnan(kernel_calls.conv2d(x, w, 1, padding, 'xla')))
  bf16 = (jnp.bfloat16,) if onednn.supports_bf16() else ()
  for dtype in (jnp.float32, *bf16):
    xd = x.astype(dtype)
    np.testing.assert_array_equal(
        np.isnan(np.asarray(jax.jit(lambda x: kernel_calls.max_pool(
            x, 3, 2, 'SAME', 'onednn'))(xd), np.float32)),
        np.isnan(np.asarray(kernel_calls.max_pool(xd, 3, 2, 'SAME', 'xla'),
                            np.float32)))
  scale, bias = jnp.ones(16), jnp.zeros(16)
  for relu in (False, True):
    ours = jax.jit(lambda x, s, b, relu=relu: onednn.batch_norm(
        x, s, b, 1e-5, relu)[0])
    def reference(x, s, b, relu=relu):
      y = batch_norm_train(x, s, b, 1e-5, x.dtype)[0]
      return jax.nn.relu(y) if relu else y
    np.testing.assert_array_equal(np.isnan(ours(x, scale, bias)),
                                  np.isnan(reference(x, scale, bias)))
    # A NaN parameter, not a NaN input.
    nan_scale = scale.at[5].set(jnp.nan)
    clean = jax.random.normal(jax.random.key(5), (2, 6, 6, 16))
    np.testing.assert_array_equal(np.isnan(ours(clean, nan_scale, bias)),
                                  np.isnan(reference(clean, nan_scale, bias)))
  # Without NaNs the check changes nothing.
  clean = jax.random.normal(jax.random.key(6), (2, 6, 6, 16))
  np.testing.assert_array_equal(
      jax.jit(lambda x: kernel_calls.max_pool(x, 3, 2, 'SAME', 'onednn'))(clean),
      kernel_calls.max_pool(clean, 3, 2, 'SAME', 'xla'))


@needs_onednn
def test_one_nan_pixel_gives_a_nan_loss_on_onednn_as_on_xla():
  from inception import models  # pylint: disable=g-import-not-at-top
  x = _with_nan((2, 32, 32, 3), (0, 10, 10, 0))
  losses = {}
  # The kernels do not change the variables: one init serves both.
  variables = models.init_variables(
      models.get_model('googlenet_cifar_tiny', conv_impl='xla'), (32, 32, 3),
      jax.random.key(0))
  for impl in ('xla', 'onednn'):
    model = models.get_model('googlenet_cifar_tiny', conv_impl=impl)
    logits, _ = jax.jit(lambda v, x, m=model: m.apply(
        v, x, train=True, mutable=['batch_stats']))(variables, x)
    losses[impl] = float(jnp.mean(logits))
  assert np.isnan(losses['xla']) and np.isnan(losses['onednn'])


# The package, copied with a library that is not the one built here.
_PROBE = '''
import sys
from inception.errors import UserError
from inception.kernels import backend, onednn
print('available', onednn.available())
print('auto', backend.resolve('auto').onednn)
try:
  backend.resolve('onednn')
except UserError as e:
  print('error:', e)
'''


def _tree_with(tmp_path, library_bytes=None, manifest=None, extra=()):
  """A copy of the package, and an inception_onednn holding ``library_bytes``."""
  shutil.copytree(os.path.join(REPO, 'inception'), tmp_path / 'inception',
                  ignore=shutil.ignore_patterns('__pycache__'))
  package = tmp_path / 'inception_onednn'
  package.mkdir()
  (package / '__init__.py').write_text('')
  target = package / os.path.basename(onednn.library_path())
  if library_bytes is not None:
    target.write_bytes(library_bytes)
  if manifest is not None:
    (package / (target.name + '.manifest.json')).write_text(
        json.dumps(manifest))
  for name, data in extra:
    (package / name).write_bytes(data)
  return tmp_path


def _probe(tree):
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  result = subprocess.run([sys.executable, '-c', _PROBE], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  return result.stdout, result.stderr


def _libm() -> bytes:
  for path in ('/lib/x86_64-linux-gnu/libm.so.6',
               '/usr/lib/x86_64-linux-gnu/libm.so.6'):
    if os.path.exists(path):
      with open(path, 'rb') as f:
        return f.read()
  pytest.skip('no libm.so.6 to stand in for a foreign library')


def _built():
  path = onednn.library_path()
  with open(path, 'rb') as f:
    data = f.read()
  with open(path + '.manifest.json') as f:
    return data, json.load(f)


def _manifest_for(data, **changes):
  import hashlib  # pylint: disable=g-import-not-at-top
  import jaxlib.version  # pylint: disable=g-import-not-at-top
  return {'size': len(data), 'sha256': hashlib.sha256(data).hexdigest(),
          'abi': onednn.ABI_VERSION, 'jaxlib': jaxlib.version.__version__,
          **changes}


def _assert_fell_back(stdout, stderr, why):
  assert 'available False' in stdout and 'auto False' in stdout
  errors = [l for l in stdout.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and why in errors[0] and 'make install' in errors[0]
  warnings = [l for l in stderr.splitlines() if 'oneDNN kernels off' in l]
  assert len(warnings) == 1 and why in warnings[0], stderr
  assert 'make install' in warnings[0]


@needs_onednn
def test_a_truncated_library_is_never_loaded(tmp_path):
  data, manifest = _built()
  stdout, stderr = _probe(_tree_with(tmp_path, data[:4096], manifest))
  _assert_fell_back(stdout, stderr, 'truncated or was replaced')


@needs_onednn
def test_a_foreign_library_in_its_place_is_never_loaded(tmp_path):
  _, manifest = _built()
  stdout, stderr = _probe(_tree_with(tmp_path, _libm(), manifest))
  _assert_fell_back(stdout, stderr, 'truncated or was replaced')


@needs_onednn
def test_a_stale_library_lacking_a_symbol_falls_back(tmp_path):
  """A loadable library whose manifest matches, but not these handlers."""
  libm = _libm()
  stdout, stderr = _probe(_tree_with(tmp_path, libm, _manifest_for(libm)))
  _assert_fell_back(stdout, stderr, 'is stale: it lacks')


@needs_onednn
@pytest.mark.parametrize('changes,why', [
    ({'abi': onednn.ABI_VERSION - 1}, 'is stale: ABI'),
    ({'jaxlib': '0.0.1'}, 'built against jaxlib 0.0.1')])
def test_a_library_built_for_other_code_falls_back(tmp_path, changes, why):
  data, _ = _built()
  stdout, stderr = _probe(_tree_with(tmp_path, data,
                                     _manifest_for(data, **changes)))
  _assert_fell_back(stdout, stderr, why)


@needs_onednn
def test_no_manifest_falls_back(tmp_path):
  data, _ = _built()
  stdout, stderr = _probe(_tree_with(tmp_path, data))
  _assert_fell_back(stdout, stderr, 'no readable build manifest')


@needs_onednn
def test_a_second_file_beside_the_library_is_ignored(tmp_path):
  """The library is found by its exact name: a stray one cannot shadow it."""
  data, manifest = _built()
  tree = _tree_with(tmp_path, data, manifest,
                    extra=[('_kernels.abi3.so', b'\0' * 100),
                           ('_kernels.so', b'\0' * 100)])
  stdout, stderr = _probe(tree)
  assert 'available True' in stdout and 'auto True' in stdout, stderr
  assert 'oneDNN kernels off' not in stderr


def test_no_library_on_a_platform_that_builds_none_is_silent(monkeypatch):
  from absl import logging  # pylint: disable=g-import-not-at-top
  said = []
  monkeypatch.setattr(logging, 'warning', lambda *a: said.append(a))
  monkeypatch.setattr(jax, 'default_backend', lambda: 'cpu')
  monkeypatch.setattr(onednn, '_load', lambda: (None, 'x.so is not built'))
  monkeypatch.setattr(onednn, 'library_path', lambda: '/nonexistent/x.so')
  monkeypatch.setattr(onednn, '_builds_here', lambda: False)
  onednn.warn_unavailable.__wrapped__()
  assert not said
  monkeypatch.setattr(onednn, '_builds_here', lambda: True)
  onednn.warn_unavailable.__wrapped__()
  assert len(said) == 1 and 'make install' in said[0][0] % said[0][1:]


def test_without_the_onednn_package_auto_warns_and_onednn_is_one_error(
    monkeypatch):
  """``pip install -e .`` alone: no inception_onednn package at all."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  from inception.errors import UserError  # pylint: disable=g-import-not-at-top
  from inception.kernels import backend  # pylint: disable=g-import-not-at-top
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: (
      None if name == 'inception_onednn' else real(name, *a)))
  assert onednn.library_path() == ''
  why = onednn._load.__wrapped__()  # pylint: disable=protected-access
  assert why == (None, 'the inception_onednn package is not installed')
  monkeypatch.setattr(onednn, '_load', lambda: why)
  monkeypatch.setattr(onednn, '_builds_here', lambda: True)
  said = []
  monkeypatch.setattr(logging, 'warning', lambda *a: said.append(a[0] % a[1:]))
  monkeypatch.setattr(onednn, 'warn_unavailable',
                      onednn.warn_unavailable.__wrapped__)
  assert not backend.resolve('auto', devices=1).onednn
  assert len(said) == 1 and 'not installed' in said[0]
  assert 'make install' in said[0]
  with pytest.raises(UserError, match='not installed.*make install'):
    backend.resolve('onednn', devices=1)


@needs_onednn
def test_bf16_where_onednn_has_no_bf16_kernels_runs_on_xla(monkeypatch):
  """An AVX2-only CPU (no AVX-512): oneDNN refuses every bf16 primitive, so
  'auto' keeps XLA's kernels for a bf16 model (one warning) and 'onednn' is
  one error; float32 stays on oneDNN."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  from inception.errors import UserError  # pylint: disable=g-import-not-at-top
  from inception.kernels import backend  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(onednn, 'supports_bf16', lambda: False)
  said = []
  monkeypatch.setattr(logging, 'warning', lambda *a: said.append(a[0] % a[1:]))
  monkeypatch.setattr(backend, '_warn_no_bf16',
                      backend._warn_no_bf16.__wrapped__)  # pylint: disable=protected-access
  kernels = backend.resolve('auto', 'bfloat16', devices=1)
  assert not kernels.onednn and kernels.convs == 'per_layer'
  assert len(said) == 1 and 'AVX-512' in said[0]
  assert backend.resolve('auto', 'float32', devices=1).onednn
  with pytest.raises(UserError, match='no bf16 kernels on this CPU'):
    backend.resolve('onednn', 'bfloat16', devices=1)


@needs_onednn
def test_the_bf16_probe_matches_the_cpu():
  """oneDNN makes bf16 primitives exactly where its ISA is AVX-512 or newer,
  and a bf16 max pooling then runs."""
  assert onednn.supports_bf16() == onednn.cpu_isa().startswith('avx512')
  if onednn.supports_bf16():
    x = jnp.ones((1, 4, 4, 16), jnp.bfloat16)
    assert onednn.max_pool(x, 2, 2, ((0, 0), (0, 0))).shape == (1, 2, 2, 16)
