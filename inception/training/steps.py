"""Pure train and eval steps (jit-compiled by the caller with shardings).

Nothing here does I/O. The steps take uint8 NHWC images and normalise on
device, so the host pipeline moves 4x fewer bytes than float32.
"""
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from inception.data import batch_augment as batch_augment_lib


class TrainState(train_state.TrainState):
  """Params, optimizer state, step, plus BatchNorm statistics."""
  batch_stats: Any = None

  def variables(self) -> dict:
    return {'params': self.params, 'batch_stats': self.batch_stats}

  def eval_variables(self) -> dict:
    """What evaluation uses."""
    return self.variables()

  def with_variables(self, params, batch_stats) -> 'TrainState':
    """Starts from other weights (``init_from``)."""
    return self.replace(params=params, batch_stats=batch_stats)


class EmaTrainState(TrainState):
  """A train state that also keeps ``ema``, a moving average of the variables.

  ``ema`` is ``{'params': ..., 'batch_stats': ...}``. A subclass rather than
  an optional field: runs without an EMA keep TrainState's checkpoint layout,
  so checkpoints saved before the EMA existed still restore.
  """
  ema: Any = None

  def eval_variables(self) -> dict:
    """What evaluation uses: the EMA."""
    return self.ema

  def with_variables(self, params, batch_stats) -> 'EmaTrainState':
    """Starts from other weights; the EMA restarts there.

    The EMA gets copies: the train step donates the state, and one buffer
    in two of its leaves cannot be donated twice.
    """
    state = super().with_variables(params, batch_stats)
    return state.replace(ema=jax.tree.map(jnp.copy, state.variables()))


def create_train_state(model, tx: optax.GradientTransformation, variables,
                       ema: bool = False) -> TrainState:
  """A train state from initial ``variables`` (see models.init_variables).

  With ``ema``, the EMA starts at the initial variables.
  """
  cls = EmaTrainState if ema else TrainState
  state = cls.create(apply_fn=model.apply, params=variables['params'], tx=tx,
                     batch_stats=variables.get('batch_stats', {}))
  if ema:
    state = state.replace(ema=state.variables())
  # A strongly typed step: one restored from a checkpoint is, and a weakly
  # typed one would give the train step a second compiled signature.
  return state.replace(step=jnp.zeros((), jnp.int32))


def normalize(images, mean, std):
  """uint8 images on [0, 255] -> standardised float32 (per channel).

  The model casts them to its activation dtype (the policy of
  ``inception.kernels.backend.activation_dtype``).
  """
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return (images.astype(jnp.float32) - mean) / std


@jax.named_scope('loss')
def cross_entropy(logits, labels, num_classes: int, label_smoothing: float):
  """Mean softmax cross-entropy with optional label smoothing.

  ``labels`` are int classes [B] or soft targets [B, classes] (mixup, CutMix).
  """
  if labels.ndim == 1:
    labels = jax.nn.one_hot(labels, num_classes)
  targets = optax.smooth_labels(labels, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets).mean()


def make_train_step(model, *, mean, std, num_classes: int,
                    label_smoothing: float = 0.0, aux_loss_weight: float = 0.3,
                    learning_rate_fn: Callable | None = None,
                    ema_decay: float = 0.0, accum_steps: int = 1,
                    augment: batch_augment_lib.BatchAugmentSpec | None = None):
  """Returns ``train_step(state, batch, rng) -> (state, metrics)``.

  With an active ``augment``, RandAugment and mixup / CutMix
  (`inception.data.batch_augment`) run first, keyed by the step; the loss then
  takes soft targets, and the train accuracy is against the unmixed labels.

  With ``accum_steps > 1`` the batch is split into that many micro-batches
  (each device keeps its share of every one), their gradients are averaged
  in a ``lax.scan`` and the optimizer steps once: the update of one batch at
  the memory of a micro-batch. BatchNorm normalises each micro-batch with its
  own statistics and its running averages update once per micro-batch; the
  dropout key of micro-batch ``i`` is ``fold_in(step key, i)``.

  With ``ema_decay > 0`` (and an ``EmaTrainState``, ``ema=True``) each step also
  moves ``ema`` towards the new params and BatchNorm statistics by
  ``1 - ema_decay``. The statistics are averaged too, as timm's ModelEmaV2
  does: live statistics belong to the live weights, and evaluating averaged
  weights with them is far off while the weights move fast.

  The dropout RNG of step ``s`` is ``fold_in(rng, s)``: a pure function of
  the seed and the step, so a resumed run draws the same masks.

  A non-finite loss or gradient norm leaves params and optimizer state
  unchanged (the step counter still advances) and is reported in
  ``metrics['finite']``; the loop stops on it, and the last good state is what
  it checkpoints.
  """

  def train_step(state: TrainState, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    labels = batch['label']
    pixels, targets = batch['image'], labels
    if augment is not None and augment.active:
      pixels, targets = batch_augment_lib.apply(augment, rng, pixels, labels,
                                                num_classes)
    images = normalize(pixels, mean, std)

    def loss_fn(params, batch_stats, images, labels, rng):
      logits, updates = state.apply_fn(
          {'params': params, 'batch_stats': batch_stats}, images,
          train=True, mutable=['batch_stats', 'intermediates'],
          rngs={'dropout': rng})
      loss = cross_entropy(logits, labels, num_classes, label_smoothing)
      aux = updates.get('intermediates', {}).get('aux_logits', ())
      total = loss + sum(aux_loss_weight * cross_entropy(
          a, labels, num_classes, label_smoothing) for a in aux)
      return total, (loss, logits, updates['batch_stats'])

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if accum_steps == 1:
      (total, (loss, logits, batch_stats)), grads = grad_fn(
          state.params, state.batch_stats, images, targets, rng)
    else:
      (total, loss, logits, batch_stats), grads = _accumulate(
          grad_fn, state, images, targets, rng, accum_steps)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(total) & jnp.isfinite(grad_norm)
    with jax.named_scope('optimizer'):
      new = state.apply_gradients(grads=grads, batch_stats=batch_stats)
      if ema_decay:
        new = new.replace(ema=optax.incremental_update(
            new.variables(), state.ema, 1.0 - ema_decay))
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


def _micro_batches(x, k: int):
  """[B, ...] -> [k, B/k, ...], micro-batch i holding rows i, i+k, ...

  Strided rather than contiguous: each device's contiguous shard of the batch
  then holds its share of every micro-batch.
  """
  return x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)


def _accumulate(grad_fn, state, images, labels, rng, k: int):
  """Mean loss, logits (batch order), BatchNorm stats and mean gradient."""
  zeros = jax.tree.map(jnp.zeros_like, state.params)

  def body(carry, xs):
    batch_stats, grad_sum, total_sum, loss_sum = carry
    micro_images, micro_labels, i = xs
    (total, (loss, logits, batch_stats)), grads = grad_fn(
        state.params, batch_stats, micro_images, micro_labels,
        jax.random.fold_in(rng, i))
    grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
    return (batch_stats, grad_sum, total_sum + total, loss_sum + loss), logits

  init = (state.batch_stats, zeros, jnp.zeros((), jnp.float32),
          jnp.zeros((), jnp.float32))
  (batch_stats, grad_sum, total, loss), logits = jax.lax.scan(
      body, init, (_micro_batches(images, k), _micro_batches(labels, k),
                   jnp.arange(k)))
  logits = logits.swapaxes(0, 1).reshape(-1, logits.shape[-1])
  grads = jax.tree.map(lambda g: g / k, grad_sum)
  return (total / k, loss / k, logits, batch_stats), grads


def make_eval_step(model, *, mean, std, num_classes: int, flip: bool = False):
  """Returns ``eval_step(state, batch) -> sums``.

  Sums (not means) over the unmasked examples, so that a host can add them up
  over batches and padded examples count for nothing: ``loss``, ``correct``,
  ``correct_top5`` (the label among the 5 highest logits; a label tied with
  the 5th counts), ``count``, and per-class ``class_correct`` /
  ``class_count``. It
  evaluates the variables' EMA when the state keeps one. With ``flip``, the
  logits are the mean over each image and its horizontal mirror (flip
  test-time augmentation).
  """

  def eval_step(state: TrainState, batch):
    images = normalize(batch['image'], mean, std)
    variables = state.eval_variables()
    logits = state.apply_fn(variables, images, train=False)
    if flip:
      logits = (logits + state.apply_fn(variables, images[:, :, ::-1],
                                        train=False)) / 2
    labels, mask = batch['label'], batch['mask'].astype(jnp.float32)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32) * mask
    label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    rank = jnp.sum(logits > label_logit, axis=-1)  # classes ranked above it
    top5 = (rank < 5).astype(jnp.float32) * mask
    one_hot = jax.nn.one_hot(labels, num_classes) * mask[:, None]
    return {
        'loss': jnp.sum(losses * mask), 'correct': jnp.sum(correct),
        'correct_top5': jnp.sum(top5),
        'count': jnp.sum(mask), 'class_correct': correct @ one_hot,
        'class_count': jnp.sum(one_hot, axis=0),
    }

  return eval_step
