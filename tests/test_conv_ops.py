"""conv_impl kernels: im2col GEMM conv and separable max pool equal XLA's."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kernel_calls
from inception.errors import UserError
from inception.kernels import backend


def _grads(fn, *args):
  return jax.jit(jax.grad(lambda *a: jnp.sum(jnp.sin(fn(*a))),
                          argnums=tuple(range(len(args)))))(*args)


@pytest.mark.parametrize('k,stride,padding', [
    (3, 1, ((1, 1), (1, 1))), (5, 1, ((2, 2), (2, 2))), (7, 2, ((3, 3), (3, 3))),
    (3, 2, 'SAME'), (3, 1, 'VALID')])
def test_gemm_conv_equals_lax_conv(k, stride, padding):
  x = jax.random.normal(jax.random.key(0), (2, 11, 11, 5))
  w = jax.random.normal(jax.random.key(1), (k, k, 5, 6))
  xla = lambda x, w: kernel_calls.conv2d(x, w, stride, padding, 'xla')
  gemm = lambda x, w: kernel_calls.conv2d(x, w, stride, padding, 'gemm')
  np.testing.assert_allclose(gemm(x, w), xla(x, w), rtol=1e-4, atol=1e-4)
  for a, b in zip(_grads(gemm, x, w), _grads(xla, x, w)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('stride,padding', [
    (1, 'SAME'), (2, 'SAME'), (2, ((1, 1), (1, 1))), (2, 'VALID')])
def test_separable_max_pool_equals_reduce_window(stride, padding):
  # Continuous random values: no ties, so the gradients are unique too.
  x = jax.random.normal(jax.random.key(2), (2, 9, 10, 3))
  xla = lambda x: kernel_calls.max_pool(x, 3, stride, padding, 'xla')
  sep = lambda x: kernel_calls.max_pool(x, 3, stride, padding, 'gemm')
  np.testing.assert_array_equal(sep(x), xla(x))
  np.testing.assert_allclose(_grads(sep, x)[0], _grads(xla, x)[0], atol=1e-6)


@pytest.mark.parametrize('stride,padding', [
    (1, 'SAME'), (2, 'SAME'), (2, ((1, 1), (1, 1)))])
def test_max_pool_gradient_with_ties_goes_where_xla_sends_it(stride, padding):
  """After a ReLU most windows tie (at 0): the first maximum gets it all."""
  x = jax.nn.relu(jnp.asarray(np.random.default_rng(0).integers(
      -2, 3, (2, 9, 10, 3)), jnp.float32))
  weights = jnp.arange(1.0, 4.0)  # distinct per channel: no cancellation
  grad = lambda impl: jax.jit(jax.grad(lambda x: jnp.sum(weights * jnp.sin(
      kernel_calls.max_pool(x, 3, stride, padding, impl)))))(x)
  sep, xla = grad('gemm'), grad('xla')
  np.testing.assert_allclose(sep, xla, atol=1e-6)
  # Each window's gradient goes to one input: the mass is conserved.
  out = kernel_calls.max_pool(x, 3, stride, padding, 'xla')
  assert float(sep.sum()) == pytest.approx(float(jnp.sum(
      weights * jnp.cos(out))), rel=1e-5)


def test_auto_uses_xla_off_cpu(monkeypatch):
  monkeypatch.setattr(backend, 'platform', lambda: 'gpu')
  x = jnp.ones((1, 8, 8, 3))
  w = jnp.ones((3, 3, 3, 4))
  hlo = jax.jit(lambda x, w: kernel_calls.conv2d(
      x, w, 1, 'SAME', 'auto')).lower(x, w).as_text()
  assert 'convolution' in hlo
  hlo = jax.jit(lambda x: kernel_calls.max_pool(x, 3, 1, 'SAME', 'auto')).lower(
      x).as_text()
  assert 'reduce_window' in hlo


def test_unknown_impl_is_rejected():
  with pytest.raises(UserError, match='conv_impl must be one of'):
    kernel_calls.conv2d(jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 1)), 1, 'SAME',
                    'cudnn')


def test_model_logits_do_not_depend_on_conv_impl():
  from inception import models  # pylint: disable=g-import-not-at-top
  x = jax.random.normal(jax.random.key(3), (2, 32, 32, 3))
  logits = {}
  for impl in ('xla', 'gemm', 'auto'):
    model = models.get_model('nin_cifar_tiny', conv_impl=impl)
    variables = models.init_variables(model, (32, 32, 3), jax.random.key(0))
    logits[impl] = jax.jit(model.apply)(variables, x)
  np.testing.assert_allclose(logits['gemm'], logits['xla'], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(logits['auto'], logits['xla'], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('k,stride,padding', [
    (3, 1, ((1, 1), (1, 1))), (5, 1, ((2, 2), (2, 2))), (3, 2, 'SAME')])
def test_depthwise_shifted_equals_grouped_lax_conv(k, stride, padding):
  x = jax.random.normal(jax.random.key(4), (2, 11, 11, 6))
  w = jax.random.normal(jax.random.key(5), (k, k, 1, 6))
  xla = lambda x, w: kernel_calls.depthwise_conv2d(x, w, stride, padding, 'xla')
  shifted = lambda x, w: kernel_calls.depthwise_conv2d(x, w, stride, padding,
                                                   'gemm')
  np.testing.assert_allclose(shifted(x, w), xla(x, w), rtol=1e-4, atol=1e-4)
  for a, b in zip(_grads(shifted, x, w), _grads(xla, x, w)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_depthwise_matches_flax_grouped_conv():
  """Same layout and numbers as nn.Conv(C, (k, k), feature_group_count=C)."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from inception.models import layers  # pylint: disable=g-import-not-at-top
  x = jax.random.normal(jax.random.key(6), (2, 8, 8, 4))
  ours = layers.DepthwiseConv(3, kernels=backend.resolve('gemm'))
  theirs = nn.Conv(4, (3, 3), padding=1, feature_group_count=4, use_bias=False)
  variables = ours.init(jax.random.key(0), x)
  np.testing.assert_allclose(ours.apply(variables, x),
                             theirs.apply(variables, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('impl', ['xla', 'gemm'])
def test_bfloat16_convolution_accumulates_in_float32(impl):
  """bf16 operands, float32 output: within bf16 rounding of the fp32 conv."""
  x = jax.random.normal(jax.random.key(0), (2, 9, 9, 6))
  k = jax.random.normal(jax.random.key(1), (3, 3, 6, 5))
  ref = kernel_calls.conv2d(x, k, 1, 'SAME', 'xla')
  out = kernel_calls.conv2d(x, k, 1, 'SAME', impl, jnp.bfloat16)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, ref, rtol=0.05, atol=0.15)
  text = str(jax.make_jaxpr(
      lambda x: kernel_calls.conv2d(x, k, 1, 'SAME', impl, jnp.bfloat16))(x))
  assert 'bf16[' in text and 'preferred_element_type=float32' in text


@pytest.mark.parametrize('dtype', [jnp.bfloat16, jnp.float32])
def test_channel_concat_and_split_equal_jnp_with_gradients(dtype):
  kernels = backend.resolve('gemm', devices=1)  # the CPU-tuned kernels
  xs = [jax.random.normal(jax.random.key(i), (2, 5, 4, c)).astype(dtype)
        for i, c in enumerate((3, 7, 1, 4))]
  ours = kernels.concat
  theirs = lambda xs: jnp.concatenate(xs, axis=-1)
  np.testing.assert_array_equal(ours(xs), theirs(xs))
  loss = lambda f: lambda xs: jnp.sum(jnp.sin(f(xs)).astype(jnp.float32))
  for a, b in zip(jax.grad(loss(ours))(xs), jax.grad(loss(theirs))(xs)):
    assert a.dtype == dtype
    np.testing.assert_array_equal(a, b)
  y = theirs(xs)
  sizes = [x.shape[-1] for x in xs]
  parts = kernels.split(y, sizes)
  for p, x in zip(parts, xs):
    np.testing.assert_array_equal(p, x)
  weigh = lambda parts: sum(jnp.sum(jnp.sin(p).astype(jnp.float32)) * (i + 1)
                            for i, p in enumerate(parts))
  np.testing.assert_array_equal(
      jax.grad(lambda y: weigh(kernels.split(y, sizes)))(y),
      jax.grad(lambda y: weigh(jnp.split(y, np.cumsum(sizes)[:-1], -1)))(y))


def test_bf16_channel_concat_is_not_widened_to_float32_on_cpu():
  """XLA:CPU computes a bf16 concatenate in float32 (a conversion pass over
  every operand and back); the CPU kernels' concat moves bf16 as bits, in the
  forward pass and in its gradient's split."""
  kernels = backend.resolve('gemm', devices=1)
  xs = [jnp.ones((2, 4, 4, c), jnp.bfloat16) for c in (3, 5)]
  step = jax.jit(jax.value_and_grad(
      lambda xs: jnp.sum(kernels.concat(xs).astype(jnp.float32) ** 2)))
  hlo = step.lower(xs).compile().as_text()
  assert 'f32[2,4,4,8]{3,2,1,0} concatenate' not in hlo
  assert 'f32[2,4,4,3]{3,2,1,0} slice' not in hlo
  widened = jax.jit(jax.value_and_grad(lambda xs: jnp.sum(
      jnp.concatenate(xs, -1).astype(jnp.float32) ** 2)))
  # The check can fail: XLA's own concat is widened (if XLA stops doing
  # that, this test says the bit-level concat may go).
  assert 'f32[2,4,4,8]{3,2,1,0} concatenate' in widened.lower(
      xs).compile().as_text()
