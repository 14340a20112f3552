"""One experiment's pieces, built from its specs: data info, model, mesh, steps.

Shared by training (``inception.training.loop``) and evaluation (``inception.training.evaluate``)
so that both compile the same model and steps with the same shardings.
"""
import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from inception import data, models
from inception.models import flops
from inception.training import build, sharding, specs, steps
from inception.errors import UserError

@dataclasses.dataclass
class Experiment:
  """Everything a train or eval loop needs, compiled for the mesh."""
  specs: specs.Specs
  info: data.DatasetInfo
  model: Any
  mesh: jax.sharding.Mesh
  batch_sharding: jax.sharding.NamedSharding
  replicated: jax.sharding.NamedSharding
  steps_per_epoch: int
  total_steps: int
  tx: Any
  train_step: Callable  # (state, batch, dropout_rng) -> (state, metrics)
  eval_step: Callable  # (state, batch) -> summed metrics
  new_state: Callable  # initial variables -> TrainState (EMA or not)
  # Params (training-only heads included) and inference MACs per image.
  cost: flops.Report

  def init_state(self) -> steps.TrainState:
    """A fresh, replicated train state from the run's seed."""
    variables = models.init_variables(
        self.model, self.specs.model.input_shape, self.init_rng,
        out_shardings=self.replicated)
    return jax.jit(self.new_state, out_shardings=self.replicated)(variables)

  def abstract_state(self, state: steps.TrainState | None = None):
    """Shapes, dtypes and shardings of the train state, for restoring into.

    Read off ``state`` where one exists (no trace), else traced from init.
    """
    if state is not None:
      return jax.tree.map(lambda a: jax.ShapeDtypeStruct(
          a.shape, a.dtype, sharding=a.sharding), state)
    x = jnp.zeros((1, *self.specs.model.input_shape), jnp.float32)
    shapes = jax.eval_shape(lambda: self.new_state(
        self.model.init(self.init_rng, x, train=False)))
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(
        a.shape, a.dtype, sharding=self.replicated), shapes)

  @property
  def init_rng(self):
    return jax.random.split(jax.random.key(self.specs.loop.seed))[0]

  @property
  def dropout_rng(self):
    """Per-step dropout keys are ``fold_in(dropout_rng, step)`` (steps.py)."""
    return jax.random.split(jax.random.key(self.specs.loop.seed))[1]


def setup(s: specs.Specs) -> Experiment:
  """Builds the experiment a run's specs (``specs.read(config)``) describe.

  Every check runs here, before any file is written.

  Raises:
    UserError: a bad field, model, dataset or batch size.
  """
  # Kernels resolved once, for the mesh's devices; a bad name, option or
  # kernel choice fails before data loads.
  model = build.model(s.model, devices=jax.device_count())
  cost = build.cost(model, s.model)  # also checks the input size
  info = data.get_info(s.data)
  if s.data.eval_split and not info.num_eval_examples:
    raise UserError(f'eval split {s.data.eval_split!r} is empty; give it '
                    "examples, e.g. --config.eval_split='train[90%:]'")
  if s.model.num_classes != info.num_classes:
    raise UserError(f'the dataset has {info.num_classes} classes but '
                    f'model.num_classes={s.model.num_classes}; set '
                    f'--config.model.num_classes={info.num_classes}')
  steps_per_epoch = data.steps_per_epoch(s.data, info.num_train_examples)
  lr = build.learning_rate_fn(s.optimizer, steps_per_epoch)
  tx = build.optimizer(s.optimizer, lr)
  total_steps = build.total_steps(s.optimizer, steps_per_epoch)
  sharding.check_batch_size(s.data.batch_size, s.loop.grad_accum_steps)
  mesh = sharding.make_mesh()
  batch, repl = sharding.batch_sharding(mesh), sharding.replicated(mesh)
  common = dict(mean=info.mean, std=info.std, num_classes=info.num_classes)
  train_step = jax.jit(
      steps.make_train_step(
          model, label_smoothing=s.loop.label_smoothing,
          aux_loss_weight=s.loop.aux_loss_weight, learning_rate_fn=lr,
          ema_decay=s.loop.ema_decay, accum_steps=s.loop.grad_accum_steps,
          augment=s.loop.augment, **common),
      in_shardings=(repl, batch, repl), out_shardings=(repl, repl),
      donate_argnums=0)
  eval_step = jax.jit(steps.make_eval_step(model, flip=s.loop.eval_flip,
                                           **common),
                      in_shardings=(repl, batch), out_shardings=repl)
  new_state = functools.partial(steps.create_train_state, model, tx,
                                ema=s.loop.ema_decay > 0)
  return Experiment(s, info, model, mesh, batch, repl, steps_per_epoch,
                    total_steps, tx, train_step, eval_step, new_state, cost)
