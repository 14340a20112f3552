"""Layers: the GEMM 1x1 convolution against nn.Conv, and the seed examples."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inception.kernels import backend, batchnorm, gemm
from inception.models import layers


def _conv_pair(features, strides, x, key=0):
  """Our Conv1x1 and flax's nn.Conv 1x1 with identical parameters."""
  ours = layers.Conv1x1(features, strides)
  ref = nn.Conv(features, (1, 1), strides=strides, padding='VALID')
  params = ours.init(jax.random.key(key), x)
  return ours, ref, params


@pytest.mark.parametrize('strides', [1, 2, 3])
def test_conv1x1_matches_nn_conv_forward_and_gradients(strides):
  x = jax.random.normal(jax.random.key(1), (2, 7, 9, 5))
  ours, ref, params = _conv_pair(4, strides, x)
  np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x),
                             rtol=1e-5, atol=1e-5)

  def loss(module):
    return lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)))

  g_ours = jax.grad(loss(ours), argnums=(0, 1))(params, x)
  g_ref = jax.grad(loss(ref), argnums=(0, 1))(params, x)
  for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_conv1x1_is_a_gemm_not_a_conv():
  x = jnp.ones((1, 4, 4, 3))
  for impl in ('xla', 'gemm'):
    module = layers.Conv1x1(2, kernels=backend.resolve(impl))
    params = module.init(jax.random.key(0), x)
    hlo = jax.jit(module.apply).lower(params, x).as_text()
    assert 'dot_general' in hlo and 'convolution' not in hlo


def test_conv1x1_equals_per_pixel_dense():
  """Seed 001: a 1x1 conv runs every pixel's channel vector through a Dense."""
  x = jax.random.normal(jax.random.key(2), (3, 6, 5, 8))
  conv = layers.Conv1x1(4)
  params = conv.init(jax.random.key(0), x)
  dense_params = {'params': {'kernel': params['params']['kernel'][0, 0],
                             'bias': params['params']['bias']}}
  per_pixel = nn.Dense(4).apply(dense_params, x.reshape(-1, 8)).reshape(
      3, 6, 5, 4)
  np.testing.assert_allclose(conv.apply(params, x), per_pixel, rtol=1e-5,
                             atol=1e-5)


# Seed 000: three 6x6 feature maps and a 1x1 kernel of depth 1 (0.1, 0.2, 0.4).
SEED000_MAPS = np.array([
    [[1, 2, 3, 2, 2, 3], [4, 5, 6, 2, 2, 3], [2, 1, 7, 2, 1, 3],
     [3, 2, 4, 2, 2, 3], [3, 2, 4, 2, 2, 3], [3, 2, 4, 2, 2, 3]],
    [[3, 2, 4, 3, 2, 2], [3, 2, 4, 3, 2, 2], [1, 2, 3, 3, 2, 2],
     [4, 5, 6, 3, 2, 2], [3, 2, 4, 3, 2, 2], [2, 1, 7, 2, 1, 3]],
    [[1, 2, 3, 3, 2, 2], [3, 2, 4, 3, 2, 2], [3, 2, 4, 3, 2, 2],
     [4, 5, 6, 3, 2, 2], [3, 2, 4, 3, 2, 2], [2, 1, 7, 2, 1, 3]],
], dtype=np.float64)

# The output the seed prints. Exact arithmetic disagrees in one entry: T[5, 2]
# is printed 0.6 but is 4*0.1 + 7*0.2 + 7*0.4 = 4.6. The seed also calls the
# output "5x5"; a 1x1 convolution keeps the 6x6 size.
SEED000_PRINTED = np.array([
    [1.1, 1.4, 2.3, 2.0, 1.4, 1.5], [2.2, 1.7, 3.0, 2.0, 1.4, 1.5],
    [1.6, 1.3, 2.9, 2.0, 1.3, 1.5], [2.7, 3.2, 4.0, 2.0, 1.4, 1.5],
    [2.1, 1.4, 2.8, 2.0, 1.4, 1.5], [1.5, 0.8, 0.6, 1.4, 0.8, 2.1]])


def test_seed000_worked_example():
  x = jnp.asarray(SEED000_MAPS.transpose(1, 2, 0)[None], jnp.float32)  # NHWC
  params = {'params': {'kernel': jnp.array([0.1, 0.2, 0.4]).reshape(1, 1, 3, 1)}}
  t = np.asarray(layers.Conv1x1(1, use_bias=False).apply(params, x))[0, :, :, 0]
  assert t.shape == (6, 6)
  assert t[0, 0] == pytest.approx(1.1) and t[1, 0] == pytest.approx(2.2)
  # Exact arithmetic in integers: 10 * T = 1*A + 2*B + 4*C.
  exact = (SEED000_MAPS[0] + 2 * SEED000_MAPS[1] + 4 * SEED000_MAPS[2]) / 10
  np.testing.assert_allclose(t, exact, atol=1e-6)
  wrong = np.argwhere(~np.isclose(SEED000_PRINTED, exact))
  assert wrong.tolist() == [[5, 2]] and exact[5, 2] == pytest.approx(4.6)


def test_seed002_shapes_and_weights():
  """16 1x1 kernels over 10x10x32 give 10x10x16 with 16x1x1x32 weights."""
  x = jnp.ones((1, 10, 10, 32))
  conv = layers.Conv1x1(16, use_bias=False)
  params = conv.init(jax.random.key(0), x)
  assert conv.apply(params, x).shape == (1, 10, 10, 16)
  assert params['params']['kernel'].size == 16 * 1 * 1 * 32
  # With stride 2, space and channels shrink together.
  strided = layers.Conv1x1(16, strides=2, use_bias=False)
  assert strided.apply(params, x).shape == (1, 5, 5, 16)


@pytest.mark.parametrize('k,strides', [(3, 1), (5, 1), (7, 2)])
def test_convkxk_matches_nn_conv(k, strides):
  x = jax.random.normal(jax.random.key(3), (2, 11, 11, 4))
  ours = layers.ConvKxK(6, k, strides)
  params = ours.init(jax.random.key(0), x)
  ref = nn.Conv(6, (k, k), strides, padding=[(k // 2, k // 2)] * 2)
  np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x),
                             rtol=1e-5, atol=1e-5)


W = layers.InceptionWidths(4, 3, 5, 2, 6, 7)


@pytest.mark.parametrize('bottleneck,pool_proj,branches', [
    (True, True, {'branch1x1', 'branch3x3_reduce', 'branch3x3',
                  'branch5x5_reduce', 'branch5x5', 'pool_proj'}),
    (False, True, {'branch1x1', 'branch3x3', 'branch5x5', 'pool_proj'}),
    (False, False, {'branch1x1', 'branch3x3', 'branch5x5'}),
])
def test_inception_block_switches(bottleneck, pool_proj, branches):
  cin = 9
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, cin))
  block = layers.InceptionBlock(W, bottleneck, pool_proj)
  variables = block.init(jax.random.key(0), x)
  assert set(variables['params']) == branches
  y = block.apply(variables, x)
  expected = 4 + 5 + 6 + (7 if pool_proj else cin)
  assert y.shape == (2, 8, 8, expected)
  # Without a bottleneck the 3x3 convolves the block input directly.
  k3 = variables['params']['branch3x3']['conv']['kernel']
  assert k3.shape == (3, 3, 3 if bottleneck else cin, 5)
  if not pool_proj:  # The pass-through branch is the 3x3/1 max pool of x.
    np.testing.assert_allclose(
        y[..., -cin:], nn.max_pool(x, (3, 3), (1, 1), 'SAME'), atol=0)


@pytest.mark.parametrize('impl', ['xla', 'gemm'])
def test_bfloat16_casts_gemm_operands_only(impl):
  """bf16 GEMM operands, float32 accumulation, params and activations.

  (The oneDNN kernels: ``tests/test_onednn.py``.)
  """
  x = jnp.ones((1, 8, 8, 9))
  block = layers.InceptionBlock(
      W, kernels=backend.resolve(impl, jnp.bfloat16))
  variables = block.init(jax.random.key(0), x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  assert block.apply(variables, x).dtype == jnp.float32
  text = str(jax.make_jaxpr(lambda v: block.apply(v, x))(variables))
  assert 'bf16[' in text and 'preferred_element_type=float32' in text


@pytest.mark.parametrize('compute_dtype', [None, jnp.bfloat16])
def test_gemm_matmul_forward_and_gradients(compute_dtype):
  """gemm.matmul's own VJP against jnp.dot's autodiff (bf16: to bf16 rounding)."""
  x = jax.random.normal(jax.random.key(0), (3, 5, 7, 24))
  w = jax.random.normal(jax.random.key(1), (24, 16))
  g = jax.random.normal(jax.random.key(2), (3, 5, 7, 16))
  loss = lambda f: lambda x, w: jnp.sum(f(x, w) * g)
  ours = jax.grad(loss(lambda x, w: gemm.matmul(x, w, compute_dtype)), (0, 1))
  ref = jax.grad(loss(lambda x, w: jnp.dot(x, w, precision='highest')), (0, 1))
  tol = 1e-5 if compute_dtype is None else 3e-2
  np.testing.assert_allclose(gemm.matmul(x, w, compute_dtype),
                             jnp.dot(x, w, precision='highest'),
                             rtol=tol, atol=tol * 5)
  for a, b in zip(ours(x, w), ref(x, w)):
    assert a.dtype == jnp.float32
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * 30)


def test_dense_matches_flax_dense():
  x = jax.random.normal(jax.random.key(0), (4, 10))
  ours, ref = layers.Dense(6), nn.Dense(6)
  variables = ref.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(1), x)) == \
      jax.tree.map(jnp.shape, variables)
  np.testing.assert_allclose(ours.init(jax.random.key(1), x)['params']['kernel'],
                             variables['params']['kernel'])
  np.testing.assert_allclose(ours.apply(variables, x), ref.apply(variables, x),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_batchnorm_matches_flax_forward_gradients_and_statistics(dtype):
  """Our BatchNorm (hand-written backward) against flax.linen.BatchNorm."""
  x = (3 * jax.random.normal(jax.random.key(0), (4, 5, 6, 7)) + 1).astype(dtype)
  ours, ref = batchnorm.BatchNorm(dtype=dtype), nn.BatchNorm(
      use_running_average=False, momentum=0.9, epsilon=1e-5, dtype=dtype)
  variables = ref.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(1), x)) == \
      jax.tree.map(jnp.shape, variables)
  params = {'scale': 1 + 0.1 * jnp.arange(7.), 'bias': 0.1 * jnp.arange(7.)}
  stats = variables['batch_stats']

  def loss(module):
    def f(p, x):
      y, new = module.apply({'params': p, 'batch_stats': stats}, x,
                            mutable=['batch_stats'])
      weights = jnp.sin(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape)
      return jnp.sum(nn.relu(y.astype(jnp.float32)) * weights), (y, new)
    return jax.jit(jax.grad(f, argnums=(0, 1), has_aux=True))

  (gp, gx), (y, new) = loss(ours)(params, x)
  (rp, rx), (ry, rnew) = loss(ref)(params, x)
  tol = 1e-5 if dtype == jnp.float32 else 2e-2
  assert y.dtype == ry.dtype == dtype and gx.dtype == dtype
  np.testing.assert_allclose(np.asarray(y, np.float32),
                             np.asarray(ry, np.float32), rtol=tol, atol=tol)
  for a, b in zip(jax.tree.leaves((gp, gx, new)), jax.tree.leaves((rp, rx, rnew))):
    np.testing.assert_allclose(np.asarray(a, np.float32),
                               np.asarray(b, np.float32), rtol=tol,
                               atol=tol * float(jnp.abs(b).max()))
  # Eval mode normalises with the running statistics, as flax does.
  running = {'params': params, 'batch_stats': rnew['batch_stats']}
  np.testing.assert_allclose(
      batchnorm.BatchNorm(use_running_average=True).apply(running, x.astype(jnp.float32)),
      nn.BatchNorm(use_running_average=True).apply(running, x.astype(jnp.float32)),
      rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('bottleneck,use_bn',
                         [(True, True), (True, False), (False, True)])
def test_fused_pointwise_equals_one_gemm_per_layer(bottleneck, use_bn):
  """fuse=True: same parameters, outputs, gradients and BatchNorm statistics."""
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 9))
  plain = layers.InceptionBlock(W, bottleneck=bottleneck, pool_proj=bottleneck,
                                use_bn=use_bn, fuse=False)
  fused = plain.clone(fuse=True)
  variables = plain.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, fused.init(jax.random.key(1), x)) == \
      jax.tree.map(jnp.shape, variables)

  def run(block):
    def loss(params):
      y, new = block.apply({**variables, 'params': params}, x, train=True,
                           mutable=['batch_stats'])
      return jnp.sum(y * y), (y, new)
    (_, aux), grads = jax.value_and_grad(loss, has_aux=True)(
        variables['params'])
    return aux, grads

  expected, got = run(plain), run(fused)
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_flop_table_is_the_same_with_fused_gemms():
  from inception import models
  from inception.models import flops  # pylint: disable=g-import-not-at-top
  fused = flops.analyze(models.get_model('googlenet_cifar_tiny',
                                         conv_impl='gemm'), (32, 32, 3),
                        xla=False)
  plain = flops.analyze(models.get_model('googlenet_cifar_tiny'), (32, 32, 3),
                        xla=False)
  assert [(r.name, r.params, r.macs) for r in fused.layers] == \
      [(r.name, r.params, r.macs) for r in plain.layers]


@pytest.mark.parametrize('name', ['googlenet_cifar_tiny', 'nin_cifar_tiny'])
def test_bf16_policy_on_an_accelerator_layer_by_layer(name, monkeypatch):
  """GPU/TPU (forced here): bf16 activations, f32 params, stats and logits."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from inception import models
  from inception.kernels import backend  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(backend, 'platform', lambda: 'gpu')
  model = models.get_model(name, dtype=jnp.bfloat16)
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  # Only dtypes are checked: traced abstractly, nothing is computed.
  variables = jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x, train=False), x)

  def apply(model, variables, x):
    return model.apply(
        variables, x, train=True, mutable=['batch_stats', 'intermediates'],
        capture_intermediates=True, rngs={'dropout': jax.random.key(2)})

  logits, state = jax.eval_shape(lambda v, x: apply(model, v, x), variables, x)
  assert logits.dtype == jnp.float32
  for leaf in jax.tree.leaves(variables['params']):
    assert leaf.dtype == jnp.float32
  for leaf in jax.tree.leaves(state.get('batch_stats', {})):
    assert leaf.dtype == jnp.float32
  inner = jax.tree_util.tree_leaves_with_path(state['intermediates'])
  convs = [(jax.tree_util.keystr(p), a.dtype) for p, a in inner
           if 'conv' in jax.tree_util.keystr(p).lower() and len(a.shape) == 4]
  assert convs and all(d == jnp.bfloat16 for _, d in convs), convs
  # The same model in float32 keeps float32 activations.
  model32 = models.get_model(name)
  _, state32 = jax.eval_shape(lambda v, x: apply(model32, v, x), variables, x)
  assert all(a.dtype == jnp.float32 for _, a in jax.tree_util.
             tree_leaves_with_path(state32['intermediates'])
             if len(a.shape) == 4)


def test_bf16_run_on_an_accelerator_tracks_the_fp32_run(monkeypatch, tmp_path):
  """The forced accelerator policy: a bf16 run's losses stay near fp32's."""
  from conftest import quick_config, records  # pylint: disable=g-import-not-at-top
  from inception.kernels import backend  # pylint: disable=g-import-not-at-top
  from inception.training import loop  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(backend, 'platform', lambda: 'gpu')
  losses = {}
  for dtype in ('float32', 'bfloat16'):
    workdir = str(tmp_path / dtype)
    loop.train_and_evaluate(quick_config(dtype=dtype, log_every_steps=1),
                             workdir)
    losses[dtype] = records(workdir, 'train/loss')
  assert losses['float32'].keys() == losses['bfloat16'].keys()
  for step, loss in losses['float32'].items():
    assert abs(losses['bfloat16'][step] - loss) < 0.05 * loss, step


@pytest.mark.parametrize('rate,broadcast_dims', [(0.5, ()), (0.3, (1, 2)),
                                                 (1.0, ()), (0.0, ())])
def test_dropout_draws_flax_s_mask_as_one_flat_vector(rate, broadcast_dims):
  """``layers.Dropout`` is ``nn.Dropout`` bit for bit, named alike (so the
  same dropout key), only compiled faster."""

  def wrapped(cls):
    class Net(nn.Module):
      @nn.compact
      def __call__(self, x):
        return cls(rate, broadcast_dims=broadcast_dims)(x, False) * 2
    return Net()

  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
  rngs = {'dropout': jax.random.key(7)}
  ours, flax_s = (wrapped(cls).apply({}, x, rngs=rngs)
                  for cls in (layers.Dropout, nn.Dropout))
  np.testing.assert_array_equal(ours, flax_s)
  if 0 < rate < 1:
    assert 0 < float(jnp.mean(ours == 0)) < 1
  assert layers.Dropout(rate).apply({}, x, True) is x
