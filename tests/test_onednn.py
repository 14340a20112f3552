"""oneDNN kernels (conv_impl='onednn'): equal to XLA's, forward and back."""
import platform
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inception import conv_ops, gemm, models, onednn

_X86_LINUX = sys.platform == 'linux' and platform.machine() == 'x86_64'
needs_onednn = pytest.mark.skipif(
    not onednn.available(), reason='oneDNN extension not built here')


def _grads(fn, *args):
  return jax.jit(jax.grad(lambda *a: jnp.sum(jnp.sin(fn(*a))),
                          argnums=tuple(range(len(args)))))(*args)


@pytest.mark.skipif(not _X86_LINUX, reason='oneDNN wheels are x86-64 Linux')
def test_the_kernels_are_built_and_load_here():
  """make install builds them: a silent fallback to XLA would hide a slow step."""
  assert onednn.available()


@needs_onednn
@pytest.mark.parametrize('k,stride,padding', [
    (1, 1, 'VALID'), (1, 2, 'VALID'), (3, 1, ((1, 1), (1, 1))),
    (5, 1, ((2, 2), (2, 2))), (7, 2, ((3, 3), (3, 3))), (3, 2, 'SAME'),
    (3, 1, 'VALID'), (3, 2, ((1, 0), (0, 2)))])
def test_conv_and_its_gradients_equal_lax_conv(k, stride, padding):
  x = jax.random.normal(jax.random.key(0), (2, 11, 11, 5))
  w = jax.random.normal(jax.random.key(1), (k, k, 5, 6))
  xla = lambda x, w: conv_ops.conv2d(x, w, stride, padding, 'xla')
  ours = lambda x, w: conv_ops.conv2d(x, w, stride, padding, 'onednn')
  np.testing.assert_allclose(jax.jit(ours)(x, w), xla(x, w), rtol=1e-4,
                             atol=1e-4)
  for a, b in zip(_grads(ours, x, w), _grads(xla, x, w)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@needs_onednn
@pytest.mark.parametrize('stride,padding', [
    (1, 'SAME'), (2, 'SAME'), (2, ((1, 1), (1, 1))), (2, 'VALID'),
    (2, ((0, 1), (1, 0)))])
def test_max_pool_and_its_gradient_equal_xla_ties_too(stride, padding):
  """After a ReLU most windows tie (at 0): the first maximum gets it all."""
  continuous = jax.random.normal(jax.random.key(7), (2, 9, 10, 3))
  ties = jax.nn.relu(jnp.asarray(np.random.default_rng(0).integers(
      -2, 3, (2, 9, 10, 3)), jnp.float32))
  weights = jnp.arange(1.0, 4.0)  # distinct per channel: no cancellation
  for x in (continuous, ties):
    pool = lambda x, impl: conv_ops.max_pool(x, 3, stride, padding, impl)
    np.testing.assert_array_equal(jax.jit(pool, static_argnums=1)(
        x, 'onednn'), pool(x, 'xla'))
    grad = lambda impl, x=x, pool=pool: jax.jit(jax.grad(
        lambda x: jnp.sum(weights * jnp.sin(pool(x, impl)))))(x)
    np.testing.assert_allclose(grad('onednn'), grad('xla'), atol=1e-6)


@needs_onednn
def test_bfloat16_operands_accumulate_and_return_float32():
  x = jax.random.normal(jax.random.key(2), (2, 9, 9, 16))
  w = jax.random.normal(jax.random.key(3), (3, 3, 16, 8)) * 0.2
  ref = lambda x, w: conv_ops.conv2d(x, w, 1, 'SAME', 'xla')
  ours = lambda x, w: conv_ops.conv2d(x, w, 1, 'SAME', 'onednn', jnp.bfloat16)
  out = jax.jit(ours)(x, w)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, ref(x, w), rtol=0.05, atol=0.1)
  for a, b in zip(_grads(ours, x, w), _grads(ref, x, w)):
    assert a.dtype == jnp.float32
    # bf16 operands: about 3 significant digits, relative to the largest entry.
    assert float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) < 0.03
  text = str(jax.make_jaxpr(ours)(x, w))
  assert 'bf16[' in text and 'inception_onednn_conv_fwd' in text


@needs_onednn
def test_pointwise_equals_the_gemm():
  x = jax.random.normal(jax.random.key(4), (3, 6, 7, 12))
  w = jax.random.normal(jax.random.key(5), (12, 9))
  ours = lambda x, w: conv_ops.pointwise(x, w, 'onednn')
  np.testing.assert_allclose(jax.jit(ours)(x, w), gemm.matmul(x, w),
                             rtol=1e-5, atol=1e-5)
  for a, b in zip(_grads(ours, x, w), _grads(gemm.matmul, x, w)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@needs_onednn
def test_auto_takes_onednn_on_one_cpu_device_only(monkeypatch):
  x, w = jnp.ones((1, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
  hlo = lambda: jax.jit(lambda x, w: conv_ops.conv2d(
      x, w, 1, 'SAME', 'auto')).lower(x, w).as_text()
  assert 'inception_onednn_conv_fwd' in hlo()
  pool = lambda: jax.jit(lambda x: conv_ops.max_pool(
      x, 3, 2, 'SAME', 'auto')).lower(x).as_text()
  assert 'inception_onednn_max_pool_fwd' in pool()
  # Sharded over several devices, XLA could only gather around the custom
  # call: 'auto' keeps XLA's own kernels there.
  monkeypatch.setattr(jax, 'device_count', lambda: 2)
  assert 'inception_onednn_conv_fwd' not in hlo()
  assert 'inception_onednn_max_pool_fwd' not in pool()


def test_onednn_without_the_extension_is_a_clear_error(monkeypatch):
  monkeypatch.setattr(onednn, 'available', lambda: False)
  with pytest.raises(ValueError, match='oneDNN extension'):
    conv_ops.conv2d(jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 1)), 1, 'SAME',
                    'onednn')
  assert not conv_ops.uses_onednn('auto')


@needs_onednn
@pytest.mark.parametrize('name', ['nin_cifar_tiny', 'googlenet_cifar_tiny'])
def test_model_and_its_gradients_do_not_depend_on_the_kernels(name):
  x = jax.random.normal(jax.random.key(6), (2, 32, 32, 3))
  out = {}
  for impl in ('xla', 'onednn'):
    model = models.get_model(name, conv_impl=impl)
    variables = models.init_variables(model, (32, 32, 3), jax.random.key(0))
    loss = lambda p, v=variables, m=model: jnp.sum(jnp.sin(m.apply(
        {**v, 'params': p}, x)))
    out[impl] = jax.jit(jax.value_and_grad(loss))(variables['params'])
  np.testing.assert_allclose(out['onednn'][0], out['xla'][0], rtol=1e-4)
  for a, b in zip(jax.tree.leaves(out['onednn'][1]),
                  jax.tree.leaves(out['xla'][1])):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


_GRADIENT_BITS = '''
import hashlib, jax, jax.numpy as jnp, numpy as np
from inception import onednn
x = jax.random.normal(jax.random.key(0), (16, 12, 12, 32))
w = jax.random.normal(jax.random.key(1), (3, 3, 32, 24))
g = jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.sin(onednn.conv2d(
    x, w, 1, 'SAME'))), (0, 1)))(x, w)
print(hashlib.sha256(b''.join(np.asarray(a).tobytes() for a in g)).hexdigest())
'''


@needs_onednn
def test_results_do_not_depend_on_omp_num_threads():
  """Ray and SLURM set OMP_NUM_THREADS; a run must compute the same bits."""
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  bits = {}
  for threads in ('1', None):
    env = {k: v for k, v in os.environ.items() if k != 'OMP_NUM_THREADS'}
    if threads:
      env['OMP_NUM_THREADS'] = threads
    bits[threads] = subprocess.run(
        [sys.executable, '-c', _GRADIENT_BITS], env=env, check=True,
        capture_output=True, text=True).stdout.strip()
  assert len(bits['1']) == 64 and bits['1'] == bits[None]


def test_onednn_on_several_devices_is_one_clear_error(monkeypatch):
  import dataclasses  # pylint: disable=g-import-not-at-top
  from inception import experiment, specs  # pylint: disable=g-import-not-at-top
  from inception.errors import UserError  # pylint: disable=g-import-not-at-top
  spec = specs.ModelSpec(name='nin_cifar_tiny', fields=(), dtype='float32',
                         conv_impl='onednn', image_size=32, channels=3)
  monkeypatch.setattr(jax, 'device_count', lambda: 2)
  with pytest.raises(UserError, match='runs on one device and this run has 2'):
    experiment._check_kernels(spec)  # pylint: disable=protected-access
  # 'auto' picks XLA's kernels there instead.
  experiment._check_kernels(dataclasses.replace(spec, conv_impl='auto'))  # pylint: disable=protected-access
