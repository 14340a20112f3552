"""A config, read once: typed, immutable specs for each part of a run.

``read(config)`` is the edge: it checks every field
(``inception.training.validate``) and returns `Specs`; the data pipeline,
model builder, optimizer and loop take their spec, never the ConfigDict.
The config survives only as ``Specs.identity``, the dict saved as the run's
``config.json`` and compared on every resume.
"""
import dataclasses
from typing import Any

import ml_collections

from inception import data
from inception.data import batch_augment
from inception.training import identity as identity_lib
from inception.training import validate, workdir


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


def model_spec(config: ml_collections.ConfigDict) -> ModelSpec:
  """The model part of a config (for tools that need only the model).

  A config saved by an older version gains today's fields first
  (``workdir.with_added_fields``); one that names only its model and input
  (a tool's) computes in float32 on the kernels ``'auto'`` picks.
  """
  c = workdir.with_added_fields(config)
  return ModelSpec(str(c['model']['name']), tuple(c['model'].items()),
                   str(c.get('dtype', 'float32')),
                   str(c.get('conv_impl', 'auto')), int(c['image_size']),
                   int(c['channels']), str(c['activation_dtype']))


def read(config: ml_collections.ConfigDict) -> Specs:
  """Checks every field of ``config`` once and splits it into specs.

  Raises:
    UserError: the first field of the wrong type or range.
  """
  validate.check(config)
  c = config
  return Specs(
      data=data.parse(c),
      model=model_spec(c),
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
      identity=identity_lib.saved_config(c))
