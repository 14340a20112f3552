"""NiN and GoogLeNet models and the name → model registry.

Every 1x1 convolution is a GEMM (``layers.Conv1x1``). Models return float32
logits; GoogLeNet's auxiliary logits (training only) are sown into the
``intermediates`` collection under ``aux_logits``.
"""
import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception.kernels import backend
from inception.kernels.backend import XLA, Kernels
from inception.models.layers import (ConvBN, Dense, Dropout, InceptionBlock,
                                     InceptionWidths, MlpConv, global_avg_pool,
                                     scale_width)



# Table 1 of Szegedy et al. 2014: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5,
# pool proj.
TABLE1 = {
    '3a': InceptionWidths(64, 96, 128, 16, 32, 32),
    '3b': InceptionWidths(128, 128, 192, 32, 96, 64),
    '4a': InceptionWidths(192, 96, 208, 16, 48, 64),
    '4b': InceptionWidths(160, 112, 224, 24, 64, 64),
    '4c': InceptionWidths(128, 128, 256, 24, 64, 64),
    '4d': InceptionWidths(112, 144, 288, 32, 64, 64),
    '4e': InceptionWidths(256, 160, 320, 32, 128, 128),
    '5a': InceptionWidths(256, 160, 320, 32, 128, 128),
    '5b': InceptionWidths(384, 192, 384, 48, 128, 128),
}


class NiN(nn.Module):
  """Network in Network for CIFAR-10 (Lin et al. 2013), as the public model.

  conv5x5-192, 1x1-160, 1x1-96, maxpool 3x3/2, dropout; conv5x5-192, 1x1-192,
  1x1-192, avgpool 3x3/2, dropout; conv3x3-192, 1x1-192, 1x1-classes; global
  average pool. Pools use Caffe's ceil mode (equal to ``'SAME'`` here).

  Attributes:
    bottleneck: if False, every hidden 1x1 layer is removed (the final 1x1
      classifier stays), leaving a plain three-conv network.
    width: multiplier on every hidden width.
    use_bn: BatchNorm after every convolution (not in the paper).
    classifier_relu: the public model's ReLU on the class maps before the
      global average pool. With it, a network whose class maps all turn
      negative outputs uniform logits with zero gradient: the loss sticks at
      log(num_classes) (``benchmarks/init_scale.py``).
    kernels: the kernels and dtypes it runs on (``get_model`` resolves them).
  """
  num_classes: int = 10
  bottleneck: bool = True
  width: float = 1.0
  dropout_rate: float = 0.5
  use_bn: bool = False
  classifier_relu: bool = True
  kernels: Kernels = XLA

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = self.kernels.activations(x)
    s = lambda c: scale_width(c, self.width)
    blocks = [((s(192), s(160), s(96)), 5), ((s(192), s(192), s(192)), 5),
              ((s(192), s(192), self.num_classes), 3)]
    for i, (features, k) in enumerate(blocks):
      if not self.bottleneck:
        features = features[:1] + (features[-1:] if i == 2 else ())
      x = MlpConv(features, k, use_bn=self.use_bn,
                  final_relu=i < 2 or self.classifier_relu,
                  kernels=self.kernels, name=f'mlpconv{i + 1}')(x, train)
      if i == 0:
        x = self.kernels.max_pool(x, 3, 2, 'SAME')
      elif i == 1:
        x = self.kernels.avg_pool(x, 3, 2, 'SAME')
      if i < 2:
        x = Dropout(self.dropout_rate, deterministic=not train)(x)
    return global_avg_pool(x).astype(jnp.float32)


class ReducedConv(nn.Module):
  """1x1 reduction then a kxk convolution (GoogLeNet's conv2 row, depth 2)."""
  reduce: int
  features: int
  kernel_size: int = 3
  use_bn: bool = False
  kernels: Kernels = XLA

  @nn.compact
  def __call__(self, x, train: bool = False):
    kw = dict(use_bn=self.use_bn, kernels=self.kernels)
    x = ConvBN(self.reduce, 1, name='reduce', **kw)(x, train)
    return ConvBN(self.features, self.kernel_size, name='conv', **kw)(x, train)


class AuxHead(nn.Module):
  """Auxiliary classifier of GoogLeNet (section 5 of the paper)."""
  # Inference never runs it: the FLOP accounting leaves it out of the MACs.
  TRAINING_ONLY: ClassVar[bool] = True
  num_classes: int
  use_bn: bool = False
  kernels: Kernels = XLA

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.avg_pool(x, (5, 5), (3, 3), 'VALID')
    x = ConvBN(128, 1, use_bn=self.use_bn, kernels=self.kernels, name='conv')(x, train)
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(Dense(1024, kernels=self.kernels, name='fc1')(x))
    x = Dropout(0.7, deterministic=not train)(x)
    return Dense(self.num_classes, kernels=self.kernels, name='fc2')(x)


class _InceptionStack(nn.Module):
  """Shared body of both GoogLeNets: modules 3a-5b with pools between them.

  ``bottleneck``, ``pool_proj`` and ``separable`` are the Inception module's
  options (``layers.InceptionBlock``); they leave the stem unchanged.
  ``kernels`` are the kernels and dtypes it runs on (``get_model`` resolves
  them from ``conv_impl``, ``dtype`` and ``activation_dtype``).
  """
  bottleneck: bool = True
  pool_proj: bool = True
  separable: bool = False
  width: float = 1.0
  use_bn: bool = True
  aux_logits: bool = False
  num_classes: int = 1000
  pool_padding: Any = 'SAME'
  kernels: Kernels = XLA

  def inception(self, x, stage, train):
    return InceptionBlock(
        TABLE1[stage].scaled(self.width), self.bottleneck, self.pool_proj,
        self.separable, use_bn=self.use_bn, kernels=self.kernels, name=f'inception_{stage}')(x, train)

  def stages(self, x, train):
    for stage in ('3a', '3b', '4a', '4b', '4c', '4d', '4e', '5a', '5b'):
      if stage in ('4a', '5a'):
        x = self.kernels.max_pool(x, 3, 2, self.pool_padding)
      x = self.inception(x, stage, train)
      # Aux params are created at init so that train and eval share a tree.
      if (stage in ('4a', '4d') and self.aux_logits
          and (train or self.is_initializing())):
        aux = AuxHead(self.num_classes, use_bn=self.use_bn,
                      kernels=self.kernels,
                      name=f'aux_{stage}')(x, train)
        self.sow('intermediates', 'aux_logits', aux.astype(jnp.float32))
    return x

  def head(self, x, dropout_rate, train):
    x = global_avg_pool(x)
    x = Dropout(dropout_rate, deterministic=not train)(x)
    return Dense(self.num_classes, kernels=self.kernels, name='fc')(x).astype(
        jnp.float32)


class GoogLeNet(_InceptionStack):
  """GoogLeNet / Inception-v1 for ImageNet, Table 1 of Szegedy et al. 2014.

  224x224 input; conv 7x7/2, maxpool, conv 1x1-64 + 3x3-192, maxpool,
  inception 3a-5b, global average pool, dropout 0.4, linear. The paper's local
  response normalisation layers are omitted (no parameters, no MACs; BatchNorm
  superseded them). ``use_bn=False`` is the paper's network; pools use
  Caffe's ceil mode, which equals ``'SAME'`` at these sizes. ``bottleneck`` and
  ``pool_proj`` act on the Inception modules only; the stem is unchanged.
  """
  num_classes: int = 1000
  use_bn: bool = False
  dropout_rate: float = 0.4

  @nn.compact
  def __call__(self, x, train: bool = False):
    kw = dict(use_bn=self.use_bn, kernels=self.kernels)
    s = lambda c: scale_width(c, self.width)
    x = self.kernels.activations(x)
    x = ConvBN(s(64), 7, strides=2, name='conv1', **kw)(x, train)
    x = self.kernels.max_pool(x, 3, 2, 'SAME')
    x = ReducedConv(s(64), s(192), 3, name='conv2', **kw)(x, train)
    x = self.kernels.max_pool(x, 3, 2, 'SAME')
    return self.head(self.stages(x, train), self.dropout_rate, train)


class GoogLeNetCIFAR(_InceptionStack):
  """The usual CIFAR adaptation of GoogLeNet (BatchNorm after every conv).

  Stem: one 3x3 conv with 192 channels at stride 1, no early pooling; modules
  3a-3b at 32x32, 4a-4e at 16x16, 5a-5b at 8x8 with Table 1's widths; the
  stage pools are 3x3/2 with padding 1 (PyTorch's ``MaxPool2d(3, 2, 1)``).
  """
  num_classes: int = 10
  use_bn: bool = True
  dropout_rate: float = 0.0
  pool_padding: Any = ((1, 1), (1, 1))

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = ConvBN(scale_width(192, self.width), 3, use_bn=self.use_bn,
               kernels=self.kernels, name='stem')(
                   self.kernels.activations(x), train)
    return self.head(self.stages(x, train), self.dropout_rate, train)


@dataclasses.dataclass(frozen=True)
class Registered:
  """A registered model: its class, default options and input shape.

  ``width_scale`` multiplies the ``width`` option, so a tiny variant at
  ``width=0.5`` is half as wide as the tiny variant at ``width=1``.
  ``defaults`` are (option, value) pairs a variant sets unless overridden.
  """
  cls: type
  input_shape: tuple[int, int, int]
  width_scale: float = 1.0
  defaults: tuple[tuple[str, Any], ...] = ()


MODELS = {
    # NiN, the CIFAR-10 public model, and at 1/16 width.
    'nin_cifar': Registered(NiN, (32, 32, 3)),
    'nin_cifar_tiny': Registered(NiN, (32, 32, 3), width_scale=1 / 16),
    # GoogLeNet, ImageNet, Table 1.
    'googlenet': Registered(GoogLeNet, (224, 224, 3)),
    # GoogLeNet's CIFAR adaptation with BatchNorm, and at 1/16 width.
    'googlenet_cifar': Registered(GoogLeNetCIFAR, (32, 32, 3)),
    'googlenet_cifar_tiny': Registered(GoogLeNetCIFAR, (32, 32, 3),
                                       width_scale=1 / 16),
    # Both with depthwise-separable 3x3/5x5 branches.
    'googlenet_separable': Registered(GoogLeNet, (224, 224, 3),
                                      defaults=(('separable', True),)),
    'googlenet_cifar_separable': Registered(GoogLeNetCIFAR, (32, 32, 3),
                                            defaults=(('separable', True),)),
}


# Options ``get_model`` resolves into the model's ``Kernels``.
KERNEL_OPTIONS = ('conv_impl', 'dtype', 'activation_dtype')


def model_options(name: str) -> tuple[str, ...]:
  """The keyword options that ``get_model(name, ...)`` accepts."""
  cls = _registered(name).cls
  return tuple(f.name for f in dataclasses.fields(cls)
               if f.init and f.name not in ('parent', 'name', 'kernels')
               ) + KERNEL_OPTIONS


def _registered(name: str) -> Registered:
  if name not in MODELS:
    raise ValueError(f'unknown model {name!r}; valid names: '
                     f'{", ".join(sorted(MODELS))}')
  return MODELS[name]


def get_model(name: str, *, kernels: Kernels | None = None,
              conv_impl: str = 'auto', dtype=None, activation_dtype=None,
              devices: int | None = None, **kwargs) -> nn.Module:
  """Builds a registered model by name, its kernels resolved once.

  Args:
    name: a key of ``MODELS``.
    kernels: the model's kernels, already resolved; None resolves them here
      from ``conv_impl``, ``dtype`` (the GEMM compute dtype) and
      ``activation_dtype`` (``inception.kernels.backend.resolve``) for a
      program on ``devices`` devices (default: all).
    **kwargs: options of the model class (``model_options(name)``), e.g.
      ``bottleneck``, ``pool_proj``, ``width``, ``num_classes``.

  Raises:
    ValueError: for an unknown name or option.
    UserError: for kernels that cannot run here.
  """
  spec = _registered(name)
  valid = model_options(name)
  unknown = sorted(set(kwargs) - set(valid))
  if unknown:
    raise ValueError(f'model {name!r} has no option {unknown[0]!r}; its options'
                    f' are: {", ".join(valid)}')
  kwargs = {**dict(spec.defaults), **kwargs}
  kwargs['width'] = kwargs.get('width', 1.0) * spec.width_scale
  if kernels is None:
    option = lambda key: kwargs.get(key, getattr(spec.cls, key, False))
    kernels = backend.resolve(
        conv_impl, dtype, activation_dtype, devices=devices,
        relus_on_onednn=spec.cls is NiN or (
            option('use_bn') and not option('separable')))
  return spec.cls(kernels=kernels, **kwargs)


def init_variables(model: nn.Module, input_shape, rng, out_shardings=None):
  """``model.init`` on a batch of one, jit-compiled without backend optimisation.

  Init runs once, and most of its compile time is spent optimising the
  per-parameter random number generation: level 0 cuts it about 4x on CPU.
  """
  x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
  init = jax.jit(lambda rng, x: model.init(rng, x, train=False),
                 out_shardings=out_shardings)
  compiled = init.lower(rng, x).compile(
      compiler_options={'xla_backend_optimization_level': 0})
  return compiled(rng, jnp.zeros(x.shape, x.dtype))
