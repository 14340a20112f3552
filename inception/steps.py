"""Pure train and eval steps (jit-compiled by the caller with shardings).

Nothing here does I/O. The steps take uint8 NHWC images and normalise on
device, so the host pipeline moves 4x fewer bytes than float32.
"""
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
  """Params, optimizer state, step, plus BatchNorm statistics."""
  batch_stats: Any = None


def create_train_state(model, tx: optax.GradientTransformation, variables
                       ) -> TrainState:
  """A train state from initial ``variables`` (see models.init_variables)."""
  state = TrainState.create(apply_fn=model.apply, params=variables['params'],
                            tx=tx, batch_stats=variables.get('batch_stats', {}))
  # A strongly typed step: one restored from a checkpoint is, and a weakly
  # typed one would give the train step a second compiled signature.
  return state.replace(step=jnp.zeros((), jnp.int32))


def normalize(images, mean, std):
  """uint8 images on [0, 255] -> standardised float32 (per channel).

  Activations stay float32 under every model dtype: a bfloat16 model casts
  only its GEMM operands (``inception.gemm``).
  """
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return (images.astype(jnp.float32) - mean) / std


@jax.named_scope('loss')
def cross_entropy(logits, labels, num_classes: int, label_smoothing: float):
  """Mean softmax cross-entropy with optional label smoothing."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes),
                                label_smoothing)
  return optax.softmax_cross_entropy(logits, targets).mean()


def make_train_step(model, *, mean, std, num_classes: int,
                    label_smoothing: float = 0.0, aux_loss_weight: float = 0.3,
                    learning_rate_fn: Callable | None = None):
  """Returns ``train_step(state, batch, rng) -> (state, metrics)``.

  The dropout RNG of step ``s`` is ``fold_in(rng, s)``: a pure function of
  the seed and the step, so a resumed run draws the same masks.

  A non-finite loss or gradient norm leaves params and optimizer state
  unchanged (the step counter still advances) and is reported in
  ``metrics['finite']``; the loop stops on it, and the last good state is what
  it checkpoints.
  """

  def train_step(state: TrainState, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    images = normalize(batch['image'], mean, std)
    labels = batch['label']

    def loss_fn(params):
      logits, updates = state.apply_fn(
          {'params': params, 'batch_stats': state.batch_stats}, images,
          train=True, mutable=['batch_stats', 'intermediates'],
          rngs={'dropout': rng})
      loss = cross_entropy(logits, labels, num_classes, label_smoothing)
      aux = updates.get('intermediates', {}).get('aux_logits', ())
      total = loss + sum(aux_loss_weight * cross_entropy(
          a, labels, num_classes, label_smoothing) for a in aux)
      return total, (loss, logits, updates['batch_stats'])

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (total, (loss, logits, batch_stats)), grads = grad_fn(state.params)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(total) & jnp.isfinite(grad_norm)
    with jax.named_scope('optimizer'):
      new = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new,
                       state.replace(step=new.step))
    metrics = {
        'loss': loss, 'total_loss': total, 'grad_norm': grad_norm,
        'accuracy': jnp.mean(jnp.argmax(logits, -1) == labels),
        'finite': finite,
    }
    if learning_rate_fn is not None:
      metrics['learning_rate'] = learning_rate_fn(state.step)
    return new, metrics

  return train_step


def make_eval_step(model, *, mean, std, num_classes: int, flip: bool = False):
  """Returns ``eval_step(state, batch) -> sums``.

  Sums (not means) over the unmasked examples, so that a host can add them up
  over batches and padded examples count for nothing: ``loss``, ``correct``,
  ``count``, and per-class ``class_correct`` / ``class_count``. With
  ``flip``, the logits are the mean over each image and its horizontal
  mirror (flip test-time augmentation).
  """

  def eval_step(state: TrainState, batch):
    images = normalize(batch['image'], mean, std)
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    logits = state.apply_fn(variables, images, train=False)
    if flip:
      logits = (logits + state.apply_fn(variables, images[:, :, ::-1],
                                        train=False)) / 2
    labels, mask = batch['label'], batch['mask'].astype(jnp.float32)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32) * mask
    one_hot = jax.nn.one_hot(labels, num_classes) * mask[:, None]
    return {
        'loss': jnp.sum(losses * mask), 'correct': jnp.sum(correct),
        'count': jnp.sum(mask), 'class_correct': correct @ one_hot,
        'class_count': jnp.sum(one_hot, axis=0),
    }

  return eval_step
