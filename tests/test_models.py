"""Model registry: pinned parameter counts, options, input-size independence."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from inception import models
from inception.training import build, specs
from inception.errors import UserError

# Every registered model's parameter count at its default options, pinned.
# nin_cifar is the public Caffe model: 966,986 (checked layer by layer below).
PINNED_PARAMS = {
    'nin_cifar': 966_986,
    'nin_cifar_tiny': 4_826,
    'googlenet': 6_998_552,
    'googlenet_cifar': 5_871_914,
    'googlenet_cifar_tiny': 24_823,
    'googlenet_separable': 3_786_200,
    'googlenet_cifar_separable': 2_659_562,
}


def param_count(name, **kwargs):
  model = models.get_model(name, **kwargs)
  x = jnp.zeros((1, *models.MODELS[name].input_shape))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  return sum(p.size for p in jax.tree.leaves(variables['params']))


def test_every_registered_model_is_pinned():
  assert set(models.MODELS) == set(PINNED_PARAMS), (
      'pin the parameter count of every registered model in PINNED_PARAMS')


@pytest.mark.parametrize('name', sorted(PINNED_PARAMS))
def test_pinned_param_count(name):
  assert param_count(name) == PINNED_PARAMS[name]


def test_nin_param_count_by_hand():
  conv = lambda k, cin, cout: k * k * cin * cout + cout
  by_hand = (conv(5, 3, 192) + conv(1, 192, 160) + conv(1, 160, 96) +
             conv(5, 96, 192) + 2 * conv(1, 192, 192) +
             conv(3, 192, 192) + conv(1, 192, 192) + conv(1, 192, 10))
  assert by_hand == 966_986 == param_count('nin_cifar')


def test_nin_without_1x1_layers_keeps_only_the_classifier_1x1():
  model = models.get_model('nin_cifar', bottleneck=False)
  variables = jax.eval_shape(model.init, jax.random.key(0),
                             jnp.zeros((1, 32, 32, 3)))
  names = {b: sorted(v) for b, v in variables['params'].items()}
  assert names == {'mlpconv1': ['conv0'], 'mlpconv2': ['conv0'],
                   'mlpconv3': ['cccp1', 'conv0']}


def test_nin_configs_keep_the_paper_network_unless_asked():
  from configs import nin_cifar  # pylint: disable=g-import-not-at-top
  paper, cpu = nin_cifar.get_config(), nin_cifar.get_config('cpu')
  assert not paper.model.use_bn and paper.model.bottleneck
  assert paper.model.dropout_rate == 0.5  # The paper's regulariser.
  assert cpu.model.use_bn and cpu.dtype == 'bfloat16'
  assert cpu.model.dropout_rate == 0.0  # The short recipe's, results/nin_cpu.
  assert not nin_cifar.get_config('naive,cpu').model.bottleneck
  with pytest.raises(ValueError, match='unknown config args'):
    nin_cifar.get_config('batchnorm')
  # BatchNorm's scale and bias replace each convolution's bias: one more
  # parameter per channel.
  channels = 192 + 160 + 96 + 192 + 192 + 192 + 192 + 192 + 10
  assert param_count('nin_cifar', use_bn=True) == 966_986 + channels


def test_nin_classifier_relu_is_the_only_difference_of_its_option():
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  paper = models.get_model('nin_cifar_tiny')
  variables = paper.init(jax.random.key(0), x)
  no_relu = models.get_model('nin_cifar_tiny', classifier_relu=False)
  assert jax.tree.structure(variables) == jax.tree.structure(
      no_relu.init(jax.random.key(0), x))
  with_relu, without = (m.apply(variables, x, capture_intermediates=True)
                        for m in (paper, no_relu))
  maps = lambda out: out[1]['intermediates']['mlpconv3']['__call__'][0]
  assert float(maps(with_relu).min()) >= 0 > float(maps(without).min())
  np.testing.assert_allclose(np.maximum(maps(without), 0), maps(with_relu),
                             rtol=1e-6)


def test_googlenet_has_table1_blocks_and_aux_heads():
  model = models.get_model('googlenet', aux_logits=True)
  x = jnp.zeros((1, 224, 224, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  blocks = [k for k in variables['params'] if k.startswith('inception_')]
  assert blocks == [f'inception_{s}' for s in
                    ('3a', '3b', '4a', '4b', '4c', '4d', '4e', '5a', '5b')]
  assert {'aux_4a', 'aux_4d'} <= set(variables['params'])


def test_aux_logits_are_sown_in_training_only():
  model = models.get_model('googlenet_cifar_tiny', aux_logits=True)
  x = jnp.zeros((2, 32, 32, 3))
  # Sowing happens while tracing: shapes suffice, no compile (init included).
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x[:1]))
  logits, state = jax.eval_shape(lambda v, x: model.apply(
      v, x, train=True, mutable=True, rngs={'dropout': jax.random.key(1)}),
                                 variables, x)
  aux = state['intermediates']['aux_logits']
  assert logits.shape == (2, 10) and [a.shape for a in aux] == [(2, 10)] * 2
  _, state = jax.eval_shape(lambda v, x: model.apply(
      v, x, train=False, mutable=['intermediates']), variables, x)
  assert 'aux_logits' not in state.get('intermediates', {})


def test_global_average_pool_serves_any_input_size():
  """Seed 001: the same NiN parameters run on 32x32 and 48x48 inputs."""
  model = models.get_model('nin_cifar_tiny')
  variables = models.init_variables(model, (32, 32, 3), jax.random.key(0))
  for size in (32, 48):
    x = jax.random.normal(jax.random.key(size), (2, size, size, 3))
    logits = jax.jit(model.apply)(variables, x)
    assert logits.shape == (2, 10) and np.isfinite(logits).all()


def test_googlenet_cifar_spatial_sizes():
  model = models.get_model('googlenet_cifar_tiny')
  x = jnp.zeros((1, 32, 32, 3))
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  _, state = jax.eval_shape(lambda v: model.apply(
      v, x, capture_intermediates=lambda m, _: m.name and
      m.name.startswith('inception_'), mutable=['intermediates']), variables)
  sizes = {k: v['__call__'][0].shape[1] for k, v in
           state['intermediates'].items()}
  assert sizes == {'inception_3a': 32, 'inception_3b': 32, 'inception_4a': 16,
                   'inception_4b': 16, 'inception_4c': 16, 'inception_4d': 16,
                   'inception_4e': 16, 'inception_5a': 8, 'inception_5b': 8}


def test_width_multiplier_and_tiny_scale():
  assert param_count('googlenet_cifar', width=1 / 16) == PINNED_PARAMS[
      'googlenet_cifar_tiny']
  assert param_count('googlenet_cifar_tiny', width=2.0) > PINNED_PARAMS[
      'googlenet_cifar_tiny']


def test_unknown_model_lists_valid_names():
  with pytest.raises(ValueError, match='valid names: .*googlenet_cifar'):
    models.get_model('resnet50')


def test_unknown_option_lists_valid_options():
  with pytest.raises(ValueError, match="no option 'pool_proj'.*bottleneck"):
    models.get_model('nin_cifar', pool_proj=False)


def test_builder_turns_model_errors_into_user_errors():
  """The library raises ValueError; the config edge reports it in one line."""
  config = ml_collections.ConfigDict(dict(
      model=dict(name='nin_cifar', pool_proj=False), image_size=32,
      channels=3))
  with pytest.raises(UserError, match="no option 'pool_proj'"):
    build.model(specs.model_spec(config))


@pytest.mark.parametrize('impl', ['xla', 'gemm'])
def test_every_layer_of_every_model_gets_the_configured_kernels(impl):
  """No Module falls back to 'auto' (GoogLeNet's aux heads once did)."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  seen = []

  def record(next_fun, args, kwargs, context):
    if hasattr(context.module, 'kernels'):
      seen.append((context.module.path, context.module.kernels.requested))
    return next_fun(*args, **kwargs)

  for name, registered in models.MODELS.items():
    options = {'conv_impl': impl}
    if 'aux_logits' in models.model_options(name):
      options['aux_logits'] = True
    model = models.get_model(name, **options)
    x = jax.ShapeDtypeStruct((1, *registered.input_shape), jnp.float32)
    seen.clear()
    with nn.intercept_methods(record):
      jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=True),
                     x)
    assert len(seen) > 5, name
    assert {i for _, i in seen} == {impl}, (name, [p for p, i in seen
                                                   if i != impl][:5])
