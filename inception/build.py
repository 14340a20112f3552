"""Builds the pieces of an experiment (model, input shape) from a config."""
import jax
import ml_collections
import optax

from inception import models
from inception.errors import UserError


def model_kwargs(config: ml_collections.ConfigDict) -> dict:
  """Model options: every ``config.model`` field but ``name``, plus dtype and conv_impl."""
  kwargs = {k: v for k, v in config.model.items() if k != 'name'}
  kwargs['dtype'] = config.get('dtype', 'float32')
  kwargs['conv_impl'] = config.get('conv_impl', 'auto')
  return kwargs


def model(config: ml_collections.ConfigDict, **overrides):
  """The flax module named by ``config.model.name`` with the config's options."""
  return models.get_model(config.model.name,
                          **{**model_kwargs(config), **overrides})


def input_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
  """(H, W, C) of the model input: the data pipeline conforms images to it."""
  return (config.image_size, config.image_size, config.channels)


SCHEDULES = ('cosine', 'onecycle', 'exponential', 'constant')
OPTIMIZERS = ('sgd', 'adamw')


def total_steps(config, steps_per_epoch: int) -> int:
  """``num_train_steps`` when > 0, else ``num_epochs`` of ``steps_per_epoch``."""
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  return max(1, int(round(config.num_epochs * steps_per_epoch)))


def learning_rate_fn(config, steps_per_epoch: int):
  """The optax schedule named by ``config.schedule``."""
  total = total_steps(config, steps_per_epoch)
  lr = config.learning_rate
  warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), total - 1)
  if config.schedule == 'cosine':
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, total, 0.0)
  if config.schedule == 'onecycle':
    return optax.cosine_onecycle_schedule(total, lr)
  if config.schedule == 'exponential':
    decay = optax.exponential_decay(
        lr, max(1, int(config.decay_epochs * steps_per_epoch)),
        config.decay_rate, staircase=True)
  elif config.schedule == 'constant':
    decay = optax.constant_schedule(lr)
  else:
    raise UserError(f'unknown schedule {config.schedule!r}; use one of '
                    f'{", ".join(SCHEDULES)}')
  if warmup <= 0:
    return decay
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def decay_mask(params):
  """Weight decay applies to conv and dense kernels, not biases or BatchNorm."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], 'key', None) == 'kernel', params)


def optimizer(config, steps_per_epoch: int) -> optax.GradientTransformation:
  """SGD (coupled L2, as in the papers and PyTorch) or AdamW (decoupled)."""
  lr = learning_rate_fn(config, steps_per_epoch)
  if config.optimizer == 'sgd':
    return optax.chain(
        optax.add_decayed_weights(config.weight_decay, decay_mask),
        optax.sgd(lr, momentum=config.momentum or None,
                  nesterov=config.nesterov))
  if config.optimizer == 'adamw':
    return optax.adamw(lr, b1=config.momentum, weight_decay=config.weight_decay,
                       mask=decay_mask)
  raise UserError(f'unknown optimizer {config.optimizer!r}; use one of '
                  f'{", ".join(OPTIMIZERS)}')
