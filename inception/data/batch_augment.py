"""Batch augmentations in the train step: RandAugment, then mixup or CutMix.

They run on device inside the jit-compiled step, after the host's crop and
flip (`inception.data.transforms`), so the in-memory and streamed pipelines get
them alike, and their key is ``fold_in(step key, _STREAM)``: a resumed run
draws the same ones, and the dropout key is what it was without them.

Mixing follows timm's ``Mixup`` in batch mode: one ratio per batch, drawn
from Beta(alpha, alpha); with both alphas set, CutMix is chosen with
probability ``mix_switch_prob``, and CutMix's ratio is corrected to the area
of its box after clipping. Image ``i`` is mixed with its neighbour ``i ^ 1``
rather than with the reversed batch, so a device's shard of the batch is
mixed within itself. Targets are ``ratio * one_hot(label) + (1 - ratio) *
one_hot(partner's label)``: label mass 1, and label smoothing (linear in the
targets) then applies to the mixture as timm's ``mixup_target`` does.
"""
import dataclasses

import jax
import jax.numpy as jnp

from inception.data import randaugment

_STREAM = 0x61756720  # fold_in tag of the augmentation key ('aug ')


@dataclasses.dataclass(frozen=True)
class BatchAugmentSpec:
  """Which batch augmentations a run uses; all off by default."""
  mixup_alpha: float = 0.0  # > 0: mixup with ratio ~ Beta(alpha, alpha)
  cutmix_alpha: float = 0.0  # > 0: CutMix with ratio ~ Beta(alpha, alpha)
  mix_switch_prob: float = 0.5  # both on: P(CutMix) for a batch
  randaugment_num_ops: int = 0  # > 0: RandAugment with this many ops
  randaugment_magnitude: float = 9.0  # RandAugment strength, 0-10

  @property
  def mixes(self) -> bool:
    return self.mixup_alpha > 0 or self.cutmix_alpha > 0

  @property
  def active(self) -> bool:
    return self.mixes or self.randaugment_num_ops > 0


def partners(x):
  """Row ``i`` of ``x`` paired with row ``i ^ 1`` (rows swapped in pairs)."""
  b = x.shape[0]
  return x.reshape(b // 2, 2, *x.shape[1:])[:, ::-1].reshape(x.shape)


def cutmix_box(key, ratio, height: int, width: int):
  """timm's ``rand_bbox``: a box of area ~(1 - ratio) around a random centre.

  Returns:
    (mask [H, W, 1], float 1 inside the box; the ratio corrected to the
    clipped box's area, ``1 - box area / image area``).
  """
  k_y, k_x = jax.random.split(key)
  cut = jnp.sqrt(1.0 - ratio)
  cut_h = jnp.floor(height * cut).astype(jnp.int32)
  cut_w = jnp.floor(width * cut).astype(jnp.int32)
  cy = jax.random.randint(k_y, (), 0, height)
  cx = jax.random.randint(k_x, (), 0, width)
  y0, y1 = jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + cut_h // 2, 0,
                                                            height)
  x0, x1 = jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + cut_w // 2, 0,
                                                           width)
  rows = jnp.arange(height)[:, None]
  cols = jnp.arange(width)[None, :]
  inside = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
  area = (y1 - y0) * (x1 - x0)
  return inside[..., None].astype(jnp.float32), 1.0 - area / (height * width)


def _mix(spec: BatchAugmentSpec, key, images, targets):
  k_switch, k_mixup, k_cutmix, k_box = jax.random.split(key, 4)
  other_images, other_targets = partners(images), partners(targets)

  def mixup():
    ratio = jax.random.beta(k_mixup, spec.mixup_alpha, spec.mixup_alpha)
    return ratio * images + (1 - ratio) * other_images, ratio

  def cutmix():
    ratio = jax.random.beta(k_cutmix, spec.cutmix_alpha, spec.cutmix_alpha)
    mask, ratio = cutmix_box(k_box, ratio, images.shape[1], images.shape[2])
    return images * (1 - mask) + other_images * mask, ratio

  if spec.mixup_alpha > 0 and spec.cutmix_alpha > 0:
    use_cutmix = jax.random.bernoulli(k_switch, spec.mix_switch_prob)
    mixed, ratio = jax.lax.cond(use_cutmix, cutmix, mixup)
  elif spec.cutmix_alpha > 0:
    mixed, ratio = cutmix()
  else:
    mixed, ratio = mixup()
  return mixed, ratio * targets + (1 - ratio) * other_targets


def apply(spec: BatchAugmentSpec, key, images, labels, num_classes: int):
  """Augments a batch.

  Args:
    spec: which augmentations; ``spec.active`` must be true.
    key: the step's key (``fold_in(rng, step)``); this folds in its own tag.
    images: uint8 [B, H, W, C] pixels (B even when mixing).
    labels: int [B].
    num_classes: width of the targets.

  Returns:
    (float32 [B, H, W, C] pixels on [0, 255], float32 targets [B, classes],
    each row summing to 1).
  """
  key = jax.random.fold_in(key, _STREAM)
  k_ra, k_mix = jax.random.split(key)
  x = images.astype(jnp.float32)
  if spec.randaugment_num_ops > 0:
    x = randaugment.randaugment(k_ra, x, spec.randaugment_num_ops,
                                spec.randaugment_magnitude)
  targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  if spec.mixes:
    x, targets = _mix(spec, k_mix, x, targets)
  return x, targets
