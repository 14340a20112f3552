"""Builds the objects of an experiment from its specs: model, schedule, optimizer."""
import jax
import optax

from inception import models
from inception.models import flops
from inception.errors import UserError
from inception.training.specs import ModelSpec, OptimizerSpec


def model(spec: ModelSpec, **overrides):
  """The flax module ``spec`` names, with its options (and ``overrides``).

  Raises:
    UserError: an unknown model name or option.
  """
  try:
    return models.get_model(spec.name, **{**spec.kwargs, **overrides})
  except ValueError as e:
    raise UserError(str(e)) from None


def cost(module, spec: ModelSpec) -> flops.Report:
  """Params and MACs per image of ``module`` at the spec's input size.

  The accounting's abstract init is also the check that the model takes
  that size (e.g. not too small): one trace does both.

  Raises:
    UserError: initialising the model at that size fails.
  """
  try:
    return flops.analyze(module, spec.input_shape, spec.name, xla=False,
                         trace_training=False)
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f'model {spec.name!r} cannot take '
                    f'{spec.image_size}x{spec.image_size}x{spec.channels}'
                    f' images ({type(e).__name__}: '
                    f'{str(e).splitlines()[0][:200] if str(e) else ""}); '
                    'change --config.image_size') from None


def total_steps(spec: OptimizerSpec, steps_per_epoch: int) -> int:
  """``num_train_steps`` when > 0, else ``num_epochs`` of ``steps_per_epoch``."""
  if spec.num_train_steps > 0:
    return spec.num_train_steps
  return max(1, int(round(spec.num_epochs * steps_per_epoch)))


def learning_rate_fn(spec: OptimizerSpec, steps_per_epoch: int):
  """The optax schedule named by ``spec.schedule``."""
  total = total_steps(spec, steps_per_epoch)
  lr = spec.learning_rate
  warmup = min(int(round(spec.warmup_epochs * steps_per_epoch)), total - 1)
  if spec.schedule == 'cosine':
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, total, 0.0)
  if spec.schedule == 'onecycle':
    return optax.cosine_onecycle_schedule(total, lr)
  if spec.schedule == 'exponential':
    decay = optax.exponential_decay(
        lr, max(1, int(spec.decay_epochs * steps_per_epoch)),
        spec.decay_rate, staircase=True)
  elif spec.schedule == 'constant':
    decay = optax.constant_schedule(lr)
  else:  # specs.check rejects it first.
    raise ValueError(f'unknown schedule {spec.schedule!r}')
  if warmup <= 0:
    return decay
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def decay_mask(params):
  """Weight decay applies to conv and dense kernels, not biases or BatchNorm."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], 'key', None) == 'kernel', params)


def optimizer(spec: OptimizerSpec, lr) -> optax.GradientTransformation:
  """SGD (coupled L2, as in the papers and PyTorch) or AdamW (decoupled).

  Args:
    spec: the optimizer spec.
    lr: its schedule, from ``learning_rate_fn`` (built once, as the train
      step logs it too).
  """
  if spec.name == 'sgd':
    tx = optax.chain(
        optax.add_decayed_weights(spec.weight_decay, decay_mask),
        optax.sgd(lr, momentum=spec.momentum or None, nesterov=spec.nesterov))
  elif spec.name == 'adamw':
    tx = optax.adamw(lr, b1=spec.momentum, weight_decay=spec.weight_decay,
                     mask=decay_mask)
  else:
    raise ValueError(f'unknown optimizer {spec.name!r}')  # specs.check rejects it
  if spec.grad_clip_norm > 0:  # without it, the optimizer state is as before
    tx = optax.chain(optax.clip_by_global_norm(spec.grad_clip_norm), tx)
  return tx
