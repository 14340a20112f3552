"""A config, read once: checked, then typed, immutable specs for each part.

``read(config)`` is the edge. ``check`` checks every field's type and range
(the one place they are checked), before any data is loaded or any file is
written, and raises one ``UserError`` naming the field, its value and what
it accepts; checks that need the data (class counts, split sizes) or the
devices (batch divisibility, where the kernels can run) follow in
``experiment.setup``. ``read`` then returns `Specs`: the data pipeline, model
builder, optimizer and loop take their spec, never the ConfigDict. The
config survives only as ``Specs.identity``, the dict saved as the run's
``config.json`` and compared on every resume.
"""
import dataclasses
import math
import numbers
import os
from typing import Any

import ml_collections

from inception import data
from inception.data import batch_augment, sources
from inception.errors import UserError
from inception.kernels import backend
from inception.training import workdir


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """The registered model, its options and its input shape."""
  name: str
  fields: tuple[tuple[str, Any], ...]  # config.model, name included.
  dtype: str  # Compute dtype; params stay float32.
  conv_impl: str
  image_size: int
  channels: int
  activation_dtype: str = 'auto'  # or a dtype; 'auto': the kernels' policy

  @property
  def input_shape(self) -> tuple[int, int, int]:
    """(H, W, C) of the model input: the data pipeline conforms images to it."""
    return (self.image_size, self.image_size, self.channels)

  @property
  def kwargs(self) -> dict:
    """Options for ``models.get_model``: fields but name, and the dtypes and
    kernels, which are not part of the checkpoint's signature."""
    activations = None if self.activation_dtype == 'auto' else (
        self.activation_dtype)
    return {**{k: v for k, v in self.fields if k != 'name'},
            'dtype': self.dtype, 'activation_dtype': activations,
            'conv_impl': self.conv_impl}

  @property
  def num_classes(self) -> int:
    return dict(self.fields)['num_classes']

  def signature(self) -> dict:
    """What must match for a checkpoint of this model to be resumed."""
    return {'model': dict(self.fields), 'image_size': self.image_size,
            'channels': self.channels}


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
  """Optimizer, learning-rate schedule and run length."""
  name: str  # 'sgd' or 'adamw'.
  learning_rate: float
  momentum: float
  nesterov: bool
  weight_decay: float
  schedule: str
  warmup_epochs: float
  decay_epochs: float
  decay_rate: float
  num_epochs: float
  num_train_steps: int  # > 0 overrides num_epochs.
  grad_clip_norm: float  # > 0: the gradient's global norm is clipped to it.


@dataclasses.dataclass(frozen=True)
class LoopSpec:
  """What the training loop does around the step."""
  seed: int
  label_smoothing: float
  aux_loss_weight: float
  grad_accum_steps: int  # micro-batches per optimizer step
  log_every_steps: int
  stuck_windows: int  # log windows at chance loss before a warning; 0: off
  stop_when_stuck: bool
  eval_every_epochs: float  # 0: only at the end.
  eval_flip: bool  # Average eval logits over each image and its mirror.
  ema_decay: float  # > 0: keep and evaluate an EMA of params and BN stats.
  checkpoint_every_steps: int
  keep_checkpoints: int
  init_from: str  # '' or a workdir / checkpoint to start from.
  augment: batch_augment.BatchAugmentSpec = batch_augment.BatchAugmentSpec()


@dataclasses.dataclass(frozen=True)
class Specs:
  """A whole run's config, checked and typed."""
  data: data.DataSpec
  model: ModelSpec
  optimizer: OptimizerSpec
  loop: LoopSpec
  # The config as saved in config.json (paths absolute): the run's identity.
  identity: dict = dataclasses.field(default_factory=dict, compare=False)


def model_spec(config) -> ModelSpec:
  """The model part of a config (for tools that need only the model).

  A config saved by an older version gains today's fields first
  (``workdir.with_added_fields``); one that names only its model and input
  (a tool's) computes in float32 on the kernels ``'auto'`` picks.
  """
  return _model(workdir.with_added_fields(config))


def _model(c) -> ModelSpec:
  return ModelSpec(str(c['model']['name']), tuple(c['model'].items()),
                   str(c.get('dtype', 'float32')),
                   str(c.get('conv_impl', 'auto')), int(c['image_size']),
                   int(c['channels']),
                   str(c.get('activation_dtype', 'auto')))


_PATHS = ('data_dir', 'init_from')  # saved absolute


def _absolute(path: str) -> str:
  return os.path.abspath(os.path.expanduser(path)) if path else path


def saved_config(config: ml_collections.ConfigDict) -> dict:
  """The config as saved in ``config.json``, the run's identity.

  Paths are made absolute, so ``eval.py`` finds the data from any directory;
  ``inception.training.identity`` compares it on every resume.
  """
  d = config.to_dict()
  if isinstance(d.get('dataset'), str) and d['dataset'].startswith('folder:'):
    d['dataset'] = 'folder:' + _absolute(d['dataset'][len('folder:'):])
  for key in _PATHS:
    if isinstance(d.get(key), str):
      d[key] = _absolute(d[key])
  return d


# The checks of every field.
DTYPES = ('float32', 'bfloat16')
AUGMENTS = sources.AUGMENTS
SCHEDULES = ('cosine', 'onecycle', 'exponential', 'constant')
OPTIMIZERS = ('sgd', 'adamw')
_SEED_LIMIT = 2**32  # jax.random.key takes a 32-bit seed without x64


def _is_int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _fail(field, value, wants):
  raise UserError(f'{field}={value!r} is invalid: {wants}')


def _int(config, field, low=None, high=None):
  v = _get(config, field)
  if not _is_int(v) or (low is not None and v < low) or (
      high is not None and v >= high):
    rng = (f' >= {low}' if low is not None else '') + (
        f' and < {high}' if high is not None else '')
    _fail(field, v, f'it must be an integer{rng}')


def _real(config, field, low=None, high=None, low_open=False,
          high_open=True):
  v = _get(config, field)
  ok = _is_real(v) and math.isfinite(v)
  if ok and low is not None:
    ok = v > low if low_open else v >= low
  if ok and high is not None:
    ok = v < high if high_open else v <= high
  if not ok:
    lo = '' if low is None else (f' > {low}' if low_open else f' >= {low}')
    hi = '' if high is None else (f' < {high}' if high_open else f' <= {high}')
    _fail(field, v, f'it must be a finite number{lo}{" and" if lo and hi else ""}'
          f'{hi}')


def _choice(config, field, choices):
  v = _get(config, field)
  if v not in choices:
    _fail(field, v, f'use one of {", ".join(map(str, choices))}')


def _str(config, field, empty_ok=False):
  v = _get(config, field)
  if not isinstance(v, str) or (not empty_ok and not v.strip()):
    _fail(field, v, 'it must be a non-empty string' if not empty_ok
          else 'it must be a string')


def _get(config, field):
  node = config
  for part in field.split('.'):
    try:
      node = node[part]
    except (KeyError, TypeError):
      raise UserError(
          f'the config has no field {field!r}; a config.json written by an '
          'older version lacks it: pass --config with the experiment\'s '
          'config file') from None
  return node


def check(config) -> None:
  """Raises a UserError for the first field of the wrong type or range."""
  _str(config, 'model.name')
  _real(config, 'model.width', 0, low_open=True)
  _int(config, 'model.num_classes', 1)
  _str(config, 'dataset')
  _str(config, 'data_dir', empty_ok=True)
  _str(config, 'train_split')
  _str(config, 'eval_split')  # every run ends with an evaluation
  _int(config, 'image_size', 8, 8193)
  _choice(config, 'channels', (1, 3))
  _choice(config, 'augment', AUGMENTS)
  _int(config, 'batch_size', 1)
  _int(config, 'num_train_steps')
  if config.num_train_steps <= 0:
    _real(config, 'num_epochs', 0, low_open=True)
  _choice(config, 'optimizer', OPTIMIZERS)
  _real(config, 'momentum', 0, 1)
  _real(config, 'learning_rate', 0)
  _choice(config, 'schedule', SCHEDULES)
  _real(config, 'warmup_epochs', 0)
  _real(config, 'decay_epochs', 0, low_open=True)
  _real(config, 'decay_rate', 0, 1, low_open=True, high_open=False)
  _real(config, 'weight_decay', 0)
  _real(config, 'label_smoothing', 0, 1)
  _real(config, 'grad_clip_norm', 0)
  _int(config, 'grad_accum_steps', 1)
  if config.batch_size % config.grad_accum_steps:
    _fail('grad_accum_steps', config.grad_accum_steps,
          f'it must divide batch_size={config.batch_size} (each micro-batch '
          'is batch_size / grad_accum_steps)')
  _real(config, 'mixup_alpha', 0)
  _real(config, 'cutmix_alpha', 0)
  _real(config, 'mix_switch_prob', 0, 1, high_open=False)
  if (config.mixup_alpha > 0 or config.cutmix_alpha > 0) and (
      config.batch_size % 2):
    _fail('batch_size', config.batch_size, 'mixup and CutMix mix images in '
          'pairs: it must be even')
  _int(config, 'randaugment_num_ops', 0)
  _real(config, 'randaugment_magnitude', 0, 10, high_open=False)
  _real(config, 'aux_loss_weight', 0)
  _choice(config, 'dtype', DTYPES)
  _choice(config, 'activation_dtype', ('auto',) + DTYPES)
  _choice(config, 'conv_impl', backend.IMPLS)  # where it runs: resolve()
  _int(config, 'seed', 0, _SEED_LIMIT)
  _int(config, 'log_every_steps', 1)
  _int(config, 'stuck_windows', 0)
  _choice(config, 'stop_when_stuck', (False, True))
  _real(config, 'eval_every_epochs', 0)
  _real(config, 'ema_decay', 0, 1)
  _int(config, 'checkpoint_every_steps', 1)
  _int(config, 'keep_checkpoints', 1)
  _str(config, 'init_from', empty_ok=True)


def read(config: ml_collections.ConfigDict) -> Specs:
  """Checks every field of ``config`` once and splits it into specs.

  Raises:
    UserError: the first field of the wrong type or range.
  """
  check(config)
  c = config
  return Specs(
      data=data.parse(c),
      model=_model(c),
      optimizer=OptimizerSpec(
          c.optimizer, float(c.learning_rate), float(c.momentum),
          bool(c.nesterov), float(c.weight_decay), c.schedule,
          float(c.warmup_epochs), float(c.decay_epochs), float(c.decay_rate),
          float(c.num_epochs), int(c.num_train_steps),
          float(c.grad_clip_norm)),
      loop=LoopSpec(
          int(c.seed), float(c.label_smoothing), float(c.aux_loss_weight),
          int(c.grad_accum_steps),
          int(c.log_every_steps), int(c.stuck_windows),
          bool(c.stop_when_stuck), float(c.eval_every_epochs),
          bool(c.eval_flip), float(c.ema_decay),
          int(c.checkpoint_every_steps),
          int(c.keep_checkpoints), str(c.init_from or ''),
          batch_augment.BatchAugmentSpec(
              float(c.mixup_alpha), float(c.cutmix_alpha),
              float(c.mix_switch_prob), int(c.randaugment_num_ops),
              float(c.randaugment_magnitude))),
      identity=saved_config(c))
