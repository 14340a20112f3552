"""One experiment's pieces, built from a config: data info, model, mesh, steps.

Shared by training (``inception.train``) and evaluation (``inception.evaluate``)
so that both compile the same model and steps with the same shardings.
"""
import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections

from inception import build, data, flops, models, sharding, steps, validate
from inception.errors import UserError

@dataclasses.dataclass
class Experiment:
  """Everything a train or eval loop needs, compiled for the mesh."""
  config: ml_collections.ConfigDict
  info: data.DatasetInfo
  model: Any
  mesh: jax.sharding.Mesh
  batch_sharding: jax.sharding.NamedSharding
  replicated: jax.sharding.NamedSharding
  steps_per_epoch: int
  total_steps: int
  tx: Any
  train_step: Callable
  eval_step: Callable

  def init_state(self) -> steps.TrainState:
    """A fresh, replicated train state from ``config.seed``."""
    variables = models.init_variables(
        self.model, build.input_shape(self.config), self.init_rng,
        out_shardings=self.replicated)
    create = jax.jit(lambda v: steps.create_train_state(self.model, self.tx, v),
                     out_shardings=self.replicated)
    return create(variables)

  def abstract_state(self):
    """Shapes, dtypes and shardings of the train state, for restoring into."""
    x = jnp.zeros((1, *build.input_shape(self.config)), jnp.float32)
    shapes = jax.eval_shape(lambda: steps.create_train_state(
        self.model, self.tx,
        self.model.init(self.init_rng, x, train=False)))
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(
        a.shape, a.dtype, sharding=self.replicated), shapes)

  @property
  def init_rng(self):
    return jax.random.split(jax.random.key(self.config.seed))[0]

  @property
  def dropout_rng(self):
    """Per-step dropout keys are ``fold_in(dropout_rng, step)`` (steps.py)."""
    return jax.random.split(jax.random.key(self.config.seed))[1]

  def cost(self) -> flops.Report:
    """Params and MACs per image of the model at the config's input shape."""
    return flops.analyze(self.model, build.input_shape(self.config),
                         self.config.model.name, xla=False)


def _check_input_size(model, config):
  """The model must accept the config's image size (e.g. not too small)."""
  x = jax.ShapeDtypeStruct((1, *build.input_shape(config)), jnp.float32)
  try:
    jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f'model {config.model.name!r} cannot take '
                    f'{config.image_size}x{config.image_size}x{config.channels}'
                    f' images ({str(e).splitlines()[0][:200]}); change '
                    '--config.image_size') from None


def setup(config: ml_collections.ConfigDict) -> Experiment:
  """Validates ``config`` and builds the experiment; UserError on bad input."""
  validate.check(config)
  sharding.check_batch_size(config.batch_size)
  model = build.model(config)  # a bad name or option fails before data loads
  _check_input_size(model, config)
  info = data.get_info(config)
  if config.eval_split and not info.num_eval_examples:
    raise UserError(f'eval split {config.eval_split!r} is empty; give it '
                    "examples, e.g. --config.eval_split='train[90%:]'")
  if config.model.num_classes != info.num_classes:
    raise UserError(f'the dataset has {info.num_classes} classes but '
                    f'model.num_classes={config.model.num_classes}; set '
                    f'--config.model.num_classes={info.num_classes}')
  steps_per_epoch = info.num_train_examples // config.batch_size
  if steps_per_epoch == 0:
    raise UserError(f'batch_size={config.batch_size} exceeds the '
                    f'{info.num_train_examples} examples of train_split '
                    f'{config.train_split!r}; lower --config.batch_size')
  tx = build.optimizer(config, steps_per_epoch)
  mesh = sharding.make_mesh()
  batch, repl = sharding.batch_sharding(mesh), sharding.replicated(mesh)
  dtype = jnp.dtype(config.dtype)
  common = dict(mean=info.mean, std=info.std, num_classes=info.num_classes,
                dtype=dtype)
  train_step = jax.jit(
      steps.make_train_step(
          model, label_smoothing=config.label_smoothing,
          aux_loss_weight=config.aux_loss_weight,
          learning_rate_fn=build.learning_rate_fn(config, steps_per_epoch),
          **common),
      in_shardings=(repl, batch, repl), out_shardings=(repl, repl),
      donate_argnums=0)
  eval_step = jax.jit(steps.make_eval_step(model, **common),
                      in_shardings=(repl, batch), out_shardings=repl)
  return Experiment(config, info, model, mesh, batch, repl, steps_per_epoch,
                    build.total_steps(config, steps_per_epoch), tx, train_step,
                    eval_step)

