"""oneDNN kernels (conv_impl='onednn'): equal to XLA's, forward and back."""
import functools
import platform
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inception import models
import kernel_calls
from inception.errors import UserError
from inception.kernels import backend, gemm, onednn
from inception.kernels.batchnorm import BatchNorm, batch_norm_train

_X86_LINUX = sys.platform == 'linux' and platform.machine() == 'x86_64'
needs_onednn = pytest.mark.skipif(
    not onednn.available(), reason='oneDNN extension not built here')
_NO_BF16 = onednn.available() and not onednn.supports_bf16()
needs_onednn_bf16 = pytest.mark.skipif(
    _NO_BF16, reason='oneDNN has no bf16 kernels on this CPU (no AVX-512)')


@pytest.fixture(autouse=True)
def _bf16_needs_onednn_bf16(request):
  """A bf16 case of a kernel test needs oneDNN's bf16 kernels (AVX-512)."""
  spec = getattr(request.node, 'callspec', None)
  if _NO_BF16 and spec and any(v is jnp.bfloat16 or str(v) == 'bfloat16'
                               for v in spec.params.values()):
    pytest.skip('oneDNN has no bf16 kernels on this CPU (no AVX-512)')


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
  xla = lambda x, w: kernel_calls.conv2d(x, w, stride, padding, 'xla')
  ours = lambda x, w: kernel_calls.conv2d(x, w, stride, padding, 'onednn')
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
    pool = lambda x, impl: kernel_calls.max_pool(x, 3, stride, padding, impl)
    np.testing.assert_array_equal(jax.jit(pool, static_argnums=1)(
        x, 'onednn'), pool(x, 'xla'))
    grad = lambda impl, x=x, pool=pool: jax.jit(jax.grad(
        lambda x: jnp.sum(weights * jnp.sin(pool(x, impl)))))(x)
    np.testing.assert_allclose(grad('onednn'), grad('xla'), atol=1e-6)


@needs_onednn
@pytest.mark.parametrize('shape,padding', [
    ((2, 16, 16, 8), 'SAME'), ((2, 9, 10, 16), 'SAME'),
    ((2, 8, 8, 16), ((1, 1), (1, 1))), ((2, 7, 7, 8), 'VALID')])
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_avg_pool_and_its_gradient_equal_flax_without_the_padding(
    shape, padding, dtype):
  """NiN's 3x3/2 average pool: padding is not counted (Caffe, flax's
  ``count_include_pad=False``); bf16 only rounds."""
  x = jax.random.normal(jax.random.key(8), shape).astype(dtype)
  weights = jnp.arange(1.0, shape[-1] + 1.0)
  ref = lambda x: nn.avg_pool(x.astype(jnp.float32), (3, 3), (2, 2), padding,
                              count_include_pad=False)
  ours = lambda x: backend.resolve('onednn').avg_pool(x, 3, 2, padding)
  assert 'inception_onednn_avg_pool_fwd' in str(jax.make_jaxpr(ours)(x))
  y = jax.jit(ours)(x)
  assert y.dtype == dtype
  g = jax.jit(jax.grad(lambda x: jnp.sum(weights * ours(x).astype(
      jnp.float32))))(x)
  g_ref = jax.grad(lambda x: jnp.sum(weights * ref(x)))(x.astype(jnp.float32))
  tol = 1e-6 if dtype == jnp.float32 else 2 ** -7  # bf16: dy and dx rounded
  for a, c in ((y, ref(x)), (g, g_ref)):
    a = a.astype(jnp.float32)
    assert float(jnp.max(jnp.abs(a - c)) / jnp.max(jnp.abs(c))) < tol


@needs_onednn_bf16
@needs_onednn
def test_bfloat16_operands_accumulate_and_return_float32():
  x = jax.random.normal(jax.random.key(2), (2, 9, 9, 16))
  w = jax.random.normal(jax.random.key(3), (3, 3, 16, 8)) * 0.2
  ref = lambda x, w: kernel_calls.conv2d(x, w, 1, 'SAME', 'xla')
  ours = lambda x, w: kernel_calls.conv2d(x, w, 1, 'SAME', 'onednn', jnp.bfloat16)
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
@pytest.mark.parametrize('k,x_dtype,compute_dtype', [
    (5, jnp.float32, None), (1, jnp.float32, None),
    (5, jnp.float32, jnp.bfloat16), (1, jnp.bfloat16, jnp.bfloat16),
    (3, jnp.bfloat16, jnp.bfloat16)])
@pytest.mark.parametrize('relu', [True, False])
def test_bias_and_relu_fused_into_the_conv_equal_them_after_it(
    k, x_dtype, compute_dtype, relu):
  """conv + bias (+ ReLU) in one oneDNN call: values and all three gradients.

  The reference runs in float32 activations with the same operand dtype, so
  bf16 activations differ only by the result's one rounding.
  """
  pads = ((k // 2, k // 2),) * 2
  x = jax.random.normal(jax.random.key(20), (3, 8, 8, 6)).astype(x_dtype)
  w = jax.random.normal(jax.random.key(21), (k, k, 6, 16)) * 0.3
  b = jax.random.normal(jax.random.key(22), (16,))
  weights = jnp.linspace(-1.0, 1.0, 16)  # no cancellation in the loss

  def ref(x, w, b):
    y = kernel_calls.conv2d(x.astype(jnp.float32), w, 1, pads, 'xla',
                            compute_dtype) + b
    return jax.nn.relu(y) if relu else y

  ours = lambda x, w, b: onednn.conv2d(x, w, 1, pads, compute_dtype, bias=b,
                                       relu=relu)
  text = str(jax.make_jaxpr(ours)(x, w, b))
  assert 'inception_onednn_conv_fwd_bias' in text
  out = jax.jit(ours)(x, w, b)
  assert out.dtype == x_dtype
  loss = lambda f: lambda x, w, b: jnp.sum(weights * f(x, w, b).astype(
      jnp.float32))
  got = (out,) + jax.jit(jax.grad(loss(ours), (0, 1, 2)))(x, w, b)
  want = (ref(x, w, b),) + jax.grad(loss(ref), (0, 1, 2))(x, w, b)
  tol = 1e-5 if compute_dtype is None else 0.02
  for a, c in zip(got, want):
    a, c = a.astype(jnp.float32), c.astype(jnp.float32)
    assert float(jnp.max(jnp.abs(a - c)) / jnp.max(jnp.abs(c))) < tol


@needs_onednn
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_a_fused_relu_keeps_a_non_finite_kernel_visible(dtype):
  """oneDNN's fused ReLU maps NaN to 0; a non-finite weight or bias must
  still give NaN, in the output channels it feeds and only there."""
  conv = jax.jit(lambda x, w, b: onednn.conv2d(
      x, w, 1, 'SAME', compute_dtype=dtype, bias=b, relu=True))
  x = jnp.ones((2, 8, 8, 3), dtype)
  w = jnp.ones((3, 3, 3, 4)).at[1, 1, 0, 0].set(jnp.nan)
  y = conv(x, w, jnp.zeros(4))
  assert bool(jnp.isnan(y[..., 0]).all()) and bool(jnp.isfinite(y[..., 1:]).all())
  y = conv(x, jnp.ones((3, 3, 3, 4)), jnp.zeros(4).at[2].set(-jnp.inf))
  assert [bool(jnp.isnan(y[..., c]).all()) for c in range(4)] == [
      False, False, True, False]
  assert bool(jnp.isfinite(y[..., jnp.array([0, 1, 3])]).all())


@needs_onednn
def test_pointwise_equals_the_gemm():
  x = jax.random.normal(jax.random.key(4), (3, 6, 7, 12))
  w = jax.random.normal(jax.random.key(5), (12, 9))
  ours = lambda x, w: kernel_calls.pointwise(x, w, 'onednn')
  np.testing.assert_allclose(jax.jit(ours)(x, w), gemm.matmul(x, w),
                             rtol=1e-5, atol=1e-5)
  for a, b in zip(_grads(ours, x, w), _grads(gemm.matmul, x, w)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@needs_onednn
def test_auto_takes_onednn_on_one_cpu_device_only(monkeypatch):
  x, w = jnp.ones((1, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
  hlo = lambda: jax.jit(lambda x, w: kernel_calls.conv2d(
      x, w, 1, 'SAME', 'auto')).lower(x, w).as_text()
  assert 'inception_onednn_conv_fwd' in hlo()
  pool = lambda: jax.jit(lambda x: kernel_calls.max_pool(
      x, 3, 2, 'SAME', 'auto')).lower(x).as_text()
  assert 'inception_onednn_max_pool_fwd' in pool()
  # Sharded over several devices, XLA could only gather around the custom
  # call: 'auto' keeps XLA's own kernels there.
  monkeypatch.setattr(jax, 'device_count', lambda: 2)
  assert 'inception_onednn_conv_fwd' not in hlo()
  assert 'inception_onednn_max_pool_fwd' not in pool()


def test_onednn_without_the_extension_is_a_clear_error(monkeypatch):
  monkeypatch.setattr(onednn, 'available', lambda: False)
  with pytest.raises(UserError, match='cannot run here'):
    kernel_calls.conv2d(jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 1)), 1, 'SAME',
                    'onednn')
  assert not kernel_calls.uses_onednn('auto')


@functools.lru_cache
def _initial_variables(name):
  """The model's initial variables: the kernels do not change them, so one
  init (seconds of compiling for GoogLeNet) serves every kernel choice."""
  return models.init_variables(models.get_model(name, conv_impl='xla'),
                               (32, 32, 3), jax.random.key(0))


@needs_onednn
def test_model_and_its_gradients_do_not_depend_on_the_kernels():
  """NiN (no BatchNorm: inference and training compute alike); GoogLeNet's
  gradients are checked in training mode, where they are taken, below."""
  name = 'nin_cifar_tiny'
  x = jax.random.normal(jax.random.key(6), (2, 32, 32, 3))
  variables = _initial_variables(name)
  out = {}
  for impl in ('xla', 'onednn'):
    model = models.get_model(name, conv_impl=impl)
    loss = lambda p, m=model: jnp.sum(jnp.sin(m.apply(
        {**variables, 'params': p}, x)))
    out[impl] = jax.jit(jax.value_and_grad(loss))(variables['params'])
  np.testing.assert_allclose(out['onednn'][0], out['xla'][0], rtol=1e-4)
  for a, b in zip(jax.tree.leaves(out['onednn'][1]),
                  jax.tree.leaves(out['xla'][1])):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


_GRADIENT_BITS = '''
import hashlib, jax, jax.numpy as jnp, numpy as np
from inception.kernels import onednn
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
  monkeypatch.setattr(onednn, 'available', lambda: True)
  with pytest.raises(UserError, match='runs on one device and this program '
                     'runs on 2'):
    backend.resolve('onednn', devices=2)
  # 'auto' picks XLA's kernels there instead.
  assert not backend.resolve('auto', devices=2).onednn


@needs_onednn
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize('relu', [False, True])
def test_batch_norm_and_its_gradients_equal_ours(dtype, relu):
  """oneDNN's statistics, output and gradients against batch_norm_train."""
  k = jax.random.split(jax.random.key(8), 4)
  x = (jax.random.normal(k[0], (4, 6, 5, 32)) * 2 + 0.5).astype(dtype)
  scale = jax.random.normal(k[1], (32,))
  bias = jax.random.normal(k[2], (32,))
  cotangent = jax.random.normal(k[3], x.shape)

  def xla(x, scale, bias):
    y, mean, var = batch_norm_train(x, scale, bias, 1e-5, x.dtype)
    return (jax.nn.relu(y) if relu else y), mean, var

  ours = lambda x, scale, bias: onednn.batch_norm(x, scale, bias, 1e-5, relu)
  got, want = jax.jit(ours)(x, scale, bias), xla(x, scale, bias)
  assert got[0].dtype == dtype and got[1].dtype == got[2].dtype == jnp.float32
  tol = 1e-5 if dtype == jnp.float32 else 1e-2  # bf16: one rounding of y
  for a, b in zip(got, want):
    np.testing.assert_allclose(np.float32(a), np.float32(b), rtol=tol,
                               atol=tol)
  grad = lambda fn: jax.jit(jax.grad(lambda *a: jnp.sum(
      fn(*a)[0].astype(jnp.float32) * cotangent), argnums=(0, 1, 2)))(
          x, scale, bias)
  for a, b in zip(grad(ours), grad(xla)):
    assert a.dtype == b.dtype
    np.testing.assert_allclose(np.float32(a), np.float32(b), rtol=tol,
                               atol=tol * float(jnp.max(jnp.abs(b))))


def _cpu_flags():
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      return set(next(l for l in f if l.startswith('flags')).split())
  except (OSError, StopIteration):
    return set()


@needs_onednn
@pytest.mark.skipif('avx512bw' not in _cpu_flags(),
                    reason="oneDNN's bf16 BatchNorm kernel needs AVX-512")
def test_batch_norm_takes_onednn_only_where_it_has_a_vector_kernel():
  """Channel counts its vector kernels skip run on plain loops, 5-40x slower."""
  assert onednn.batch_norm_vectorized((2, 4, 4, 64), jnp.float32, 1e-5)
  assert onednn.batch_norm_vectorized((2, 4, 4, 64), jnp.bfloat16, 1e-5, True)
  assert not onednn.batch_norm_vectorized((2, 4, 4, 13), jnp.float32, 1e-5)
  assert not onednn.batch_norm_vectorized((2, 4, 4, 13), jnp.bfloat16, 1e-5)
  assert not onednn.batch_norm_vectorized((2, 4, 13), jnp.float32, 1e-5)
  for features, on_onednn in ((64, True), (13, False)):
    bn = BatchNorm(relu=True, kernels=backend.resolve('onednn'))
    x = jnp.ones((2, 4, 4, features))
    variables = bn.init(jax.random.key(0), x)
    hlo = jax.jit(lambda v, x, bn=bn: bn.apply(v, x, mutable=['batch_stats'])
                 ).lower(variables, x).as_text()
    assert ('inception_onednn_batch_norm_fwd' in hlo) == on_onednn


@needs_onednn_bf16
@needs_onednn
def test_bfloat16_activations_stay_bfloat16_through_the_kernels():
  """bf16 in: conv and max pool return bf16 (BatchNorm: the test above)."""
  x = jax.random.normal(jax.random.key(9), (2, 9, 9, 16)).astype(jnp.bfloat16)
  w = jax.random.normal(jax.random.key(10), (3, 3, 16, 32)) * 0.2
  conv = lambda x, w: kernel_calls.conv2d(x, w, 1, 'SAME', 'onednn', jnp.bfloat16)
  y = jax.jit(conv)(x, w)
  assert y.dtype == jnp.bfloat16
  ref = kernel_calls.conv2d(x.astype(jnp.float32), w.astype(jnp.bfloat16).astype(
      jnp.float32), 1, 'SAME', 'xla')
  # f32 sums in another order, then one rounding to bf16 (8 bits).
  np.testing.assert_allclose(np.float32(y), ref, rtol=2 ** -7, atol=1e-2)
  dx, dw = _grads(conv, x, w)
  assert dx.dtype == jnp.bfloat16 and dw.dtype == jnp.float32
  ref_dx, ref_dw = _grads(lambda x, w: kernel_calls.conv2d(
      x, w.astype(jnp.bfloat16).astype(jnp.float32), 1, 'SAME', 'xla'),
                          x.astype(jnp.float32), w)
  # The cotangent (cos of a bf16 output) and dy are bf16 on our side.
  for a, b in ((dx, ref_dx), (dw, ref_dw)):
    assert float(jnp.max(jnp.abs(np.float32(a) - b))) < 0.02 * float(
        jnp.max(jnp.abs(b)))
  pool = lambda x, impl: kernel_calls.max_pool(x, 3, 2, 'SAME', impl)
  got = jax.jit(pool, static_argnums=1)(y, 'onednn')
  assert got.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.float32(got), np.float32(pool(y, 'xla')))
  grad = lambda impl: jax.jit(jax.grad(lambda y: jnp.sum(
      pool(y, impl).astype(jnp.float32) * jnp.arange(1.0, 33.0))))(y)
  np.testing.assert_array_equal(np.float32(grad('onednn')),
                                np.float32(grad('xla')))


def test_activations_are_bfloat16_only_where_onednn_runs_every_relu(
    monkeypatch):
  """Measured: bf16 activations pay only where oneDNN owns the elementwise work."""
  monkeypatch.setattr(backend, 'platform', lambda: 'cpu')
  bf16, f32 = jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)
  assert backend.activation_dtype(jnp.bfloat16, on_onednn=True) == bf16
  assert backend.activation_dtype('bfloat16', on_onednn=True,
                                  relus_on_onednn=False) == f32
  assert backend.activation_dtype(jnp.float32, on_onednn=True) == f32
  assert backend.activation_dtype(None, on_onednn=True) == f32
  assert backend.activation_dtype(jnp.bfloat16, on_onednn=False) == f32


@needs_onednn
def test_googlenet_does_not_depend_on_the_kernels():
  """Training mode (BatchNorm on batch statistics, + fused ReLU, and its
  running averages), with gradients; inference (running averages), forward."""
  x = jax.random.normal(jax.random.key(11), (4, 32, 32, 3))
  variables = _initial_variables('googlenet_cifar_tiny')
  out, inference = {}, {}
  for impl in ('xla', 'onednn'):
    model = models.get_model('googlenet_cifar_tiny', conv_impl=impl)
    inference[impl] = jax.jit(model.apply)(variables, x)

    def loss(p, v=variables, m=model):
      logits, state = m.apply({**v, 'params': p}, x, train=True,
                              mutable=['batch_stats'])
      return jnp.sum(jnp.sin(logits)), state

    out[impl] = jax.jit(jax.value_and_grad(loss, has_aux=True))(
        variables['params'])
    if impl == 'onednn':  # its widths take both BatchNorm kernels
      hlo = jax.jit(jax.grad(lambda p, loss=loss: loss(p)[0])).lower(
          variables['params']).as_text()
      layers = len(jax.tree.leaves(variables['batch_stats'])) // 2
      assert 0 < hlo.count('inception_onednn_batch_norm_bwd') < layers
  np.testing.assert_allclose(inference['onednn'], inference['xla'],
                             rtol=1e-4, atol=1e-4)
  (l1, s1), g1 = out['onednn']
  (l2, s2), g2 = out['xla']
  np.testing.assert_allclose(l1, l2, rtol=1e-4)
  for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s2)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  # Batch statistics of 4 images make the small per-channel gradients
  # ill-conditioned: XLA's own 'xla' and 'gemm' kernels differ by 0.3% of
  # the largest entry there, oneDNN's by 0.4%.
  scale = max(float(jnp.max(jnp.abs(b))) for b in jax.tree.leaves(g2))
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(a, b, atol=0.01 * scale)


@needs_onednn_bf16
@needs_onednn
def test_bfloat16_model_keeps_bfloat16_activations_and_trains_alike():
  """oneDNN's bf16 activations stray from float32 no more than bf16 GEMMs do.

  All three arms run on oneDNN (its compiles are the cheap ones): float32,
  bf16 operands with float32 activations, and bf16 activations.
  """
  x = jax.random.normal(jax.random.key(12), (4, 32, 32, 3))
  variables = models.init_variables(
      models.get_model('googlenet_cifar_tiny', conv_impl='onednn'),
      (32, 32, 3), jax.random.key(0))
  out = {}
  for dtype, activations in (('float32', 'auto'), ('bfloat16', 'float32'),
                             ('bfloat16', 'auto')):
    model = models.get_model('googlenet_cifar_tiny', conv_impl='onednn',
                             dtype=dtype, activation_dtype=activations)
    loss = lambda p, m=model: jnp.mean(jnp.square(m.apply(
        {**variables, 'params': p}, x, train=True, mutable=['batch_stats'])[0]))
    loss_value, grads = jax.jit(jax.value_and_grad(loss))(variables['params'])
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))
    out[dtype, activations] = loss_value, jnp.concatenate(
        [g.ravel() for g in jax.tree.leaves(grads)])
    if activations == 'auto':
      # The stem conv's output: bf16 activations under bf16 only.
      text = str(jax.make_jaxpr(loss)(variables['params']))
      assert ('bf16[4,32,32,12]' in text) == (dtype == 'bfloat16')
  f32_loss, f32_grad = out['float32', 'auto']
  cosine = lambda g: float(g @ f32_grad / jnp.linalg.norm(g)
                           / jnp.linalg.norm(f32_grad))
  # A net this narrow (1-channel BatchNorms) is far from float32 in bf16
  # either way: cosine 0.86 for bf16 operands, 0.84 with bf16 activations.
  assert cosine(out['bfloat16', 'auto'][1]) > cosine(
      out['bfloat16', 'float32'][1]) - 0.05
  for key in (('bfloat16', 'float32'), ('bfloat16', 'auto')):
    np.testing.assert_allclose(out[key][0], f32_loss, rtol=0.02)


@needs_onednn_bf16
@needs_onednn
@pytest.mark.parametrize('name,override,want', [
    ('nin_cifar_tiny', None, jnp.bfloat16),  # conv + bias + ReLU fused
    ('nin_cifar_tiny', 'float32', jnp.float32),
    ('googlenet_cifar_tiny', None, jnp.bfloat16),
    ('googlenet_cifar_tiny', 'float32', jnp.float32),
    ('googlenet_cifar_separable', None, jnp.float32)])  # depthwise: XLA's
def test_a_model_option_overrides_the_activation_rule(name, override, want):
  kwargs = {} if override is None else {'activation_dtype': override}
  if name == 'googlenet_cifar_separable':
    kwargs['width'] = 1 / 16
  model = models.get_model(name, conv_impl='onednn', dtype='bfloat16',
                           **kwargs)
  variables = models.init_variables(model, (32, 32, 3), jax.random.key(0))
  jaxpr = jax.make_jaxpr(lambda x: model.apply(variables, x))(
      jnp.zeros((2, 32, 32, 3)))
  # (A conv with a fused ReLU sits in a cond: the non-finite guard.)
  first_conv = next(e for e in jaxpr.jaxpr.eqns
                    if e.primitive.name in ('custom_vjp_call', 'cond'))
  assert first_conv.outvars[0].aval.dtype == want
  assert jaxpr.out_avals[0].dtype == jnp.float32  # logits


@needs_onednn_bf16
@needs_onednn
def test_bfloat16_activations_train_with_float32_operands_too():
  """A forced bf16 activation dtype with fp32 GEMMs: the convs write f32."""
  model = models.get_model('googlenet_cifar_tiny', conv_impl='onednn',
                           activation_dtype='bfloat16')
  variables = models.init_variables(model, (32, 32, 3), jax.random.key(0))
  x = jax.random.normal(jax.random.key(13), (2, 32, 32, 3))
  loss = lambda p: jnp.mean(jnp.square(model.apply(
      {**variables, 'params': p}, x, train=True, mutable=['batch_stats'])[0]))
  value, grads = jax.jit(jax.value_and_grad(loss))(variables['params'])
  assert jnp.isfinite(value)
  assert all(jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads))
