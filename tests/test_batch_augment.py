"""RandAugment, mixup and CutMix: against PIL, label mass, keys, resume."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from conftest import assert_same_state, final_state, quick_config
from inception.data import batch_augment, randaugment
from inception.training import specs, steps, loop
from inception.errors import UserError

Spec = batch_augment.BatchAugmentSpec


def _image(seed=0, size=20, channels=3):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (size, size, channels)).astype(np.uint8)


def _op(name, image, level, sign=1.0):
  out = randaugment.OPS[name](jnp.asarray(image, jnp.float32),
                              jnp.float32(level), jnp.float32(sign))
  return np.asarray(jnp.clip(jnp.round(out), 0, 255)).astype(np.uint8)


# Ops with a PIL counterpart, at magnitude 9 (timm's "increasing" ranges).
_PIL = {
    'AutoContrast': lambda im: ImageOps.autocontrast(im),
    'Equalize': lambda im: ImageOps.equalize(im),
    'Invert': lambda im: ImageOps.invert(im),
    'Posterize': lambda im: ImageOps.posterize(im, 4 - int(9 / 10 * 4)),
    'Solarize': lambda im: ImageOps.solarize(im, 256 - int(9 / 10 * 256)),
    'Color': lambda im: ImageEnhance.Color(im).enhance(1 + 0.9 * 0.9),
    'Contrast': lambda im: ImageEnhance.Contrast(im).enhance(1 + 0.9 * 0.9),
    'Brightness': lambda im: ImageEnhance.Brightness(im).enhance(1 + 0.81),
    'Sharpness': lambda im: ImageEnhance.Sharpness(im).enhance(1 + 0.81),
}


@pytest.mark.parametrize('name', sorted(_PIL))
def test_ops_match_pil(name):
  image = _image()
  ours = _op(name, image, 9.0).astype(int)
  theirs = np.asarray(_PIL[name](Image.fromarray(image))).astype(int)
  # PIL rounds its blends in fixed point: one level apart at most.
  assert np.abs(ours - theirs).max() <= 1, name
  assert np.mean(ours != theirs) < 0.05, name


def test_translate_matches_pil_and_shear_keeps_its_origin_row():
  image = _image()  # 20 px: 45% at magnitude 10 is 9 whole pixels
  ours = _op('TranslateXRel', image, 10.0)
  theirs = Image.fromarray(image).transform(
      (20, 20), Image.Transform.AFFINE, (1, 0, 9, 0, 1, 0),
      Image.Resampling.NEAREST, fillcolor=(128, 128, 128))
  np.testing.assert_array_equal(ours, np.asarray(theirs))
  ours = _op('TranslateYRel', image, 10.0, sign=-1.0)
  theirs = Image.fromarray(image).transform(
      (20, 20), Image.Transform.AFFINE, (1, 0, 0, 0, 1, -9),
      Image.Resampling.NEAREST, fillcolor=(128, 128, 128))
  np.testing.assert_array_equal(ours, np.asarray(theirs))
  # PIL's shear is about the top-left corner: row 0 (ShearX) and column 0
  # (ShearY) stay where they are.
  np.testing.assert_array_equal(_op('ShearX', image, 9.0)[0], image[0])
  np.testing.assert_array_equal(_op('ShearY', image, 9.0)[:, 0], image[:, 0])


@pytest.mark.parametrize('name', ['Rotate', 'ShearX', 'ShearY',
                                  'TranslateXRel', 'TranslateYRel', 'Color',
                                  'Contrast', 'Brightness', 'Sharpness',
                                  'Solarize', 'SolarizeAdd'])
def test_magnitude_zero_is_the_identity(name):
  image = _image(1)
  np.testing.assert_array_equal(_op(name, image, 0.0), image)


def test_ops_handle_grey_images():
  image = _image(2, channels=1)
  for name in randaugment.OPS:
    assert _op(name, image, 5.0).shape == image.shape, name


def _batch(n=8, size=16, channels=3, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, size, size, channels)).astype(np.uint8)
  return jnp.asarray(images), jnp.asarray(rng.integers(0, 10, n), jnp.int32)


_ALL = Spec(mixup_alpha=0.8, cutmix_alpha=1.0, randaugment_num_ops=2)
# Compiled once per spec and shape, as in the train step (eager is slow).
_apply = jax.jit(batch_augment.apply, static_argnums=(0, 4))


def test_batch_augment_shapes_range_and_label_mass():
  images, labels = _batch()
  for spec in (Spec(mixup_alpha=0.2), Spec(cutmix_alpha=1.0),
               Spec(randaugment_num_ops=1), _ALL):
    for step in range(3):
      x, t = _apply(spec, jax.random.key(step), images, labels, 10)
      assert x.shape == images.shape and x.dtype == jnp.float32
      assert t.shape == (8, 10) and t.dtype == jnp.float32
      assert float(x.min()) >= 0 and float(x.max()) <= 255
      np.testing.assert_allclose(np.asarray(t.sum(-1)), 1.0, rtol=1e-6)
      assert float(t.min()) >= 0


def test_batch_augment_is_a_function_of_the_key():
  images, labels = _batch()
  a = _apply(_ALL, jax.random.key(3), images, labels, 10)
  b = _apply(_ALL, jax.random.key(3), images, labels, 10)
  c = _apply(_ALL, jax.random.key(4), images, labels, 10)
  for u, v in zip(a, b):
    np.testing.assert_array_equal(u, v)
  assert not np.array_equal(a[0], c[0])
  # An image's RandAugment depends on its row, not on the rest of the batch.
  spec = Spec(randaugment_num_ops=1)
  whole, _ = _apply(spec, jax.random.key(5), images, labels, 10)
  half, _ = _apply(spec, jax.random.key(5), images[:4], labels[:4], 10)
  np.testing.assert_array_equal(whole[:4], half)


def test_mixup_mixes_neighbours_with_one_ratio():
  images, labels = _batch()
  x, t = batch_augment.apply(Spec(mixup_alpha=0.4), jax.random.key(0), images,
                             labels, 10)
  f = np.asarray(images, np.float32)
  other = f.reshape(4, 2, *f.shape[1:])[:, ::-1].reshape(f.shape)
  one_hot = np.eye(10)[np.asarray(labels)]
  other_hot = one_hot.reshape(4, 2, 10)[:, ::-1].reshape(8, 10)
  ratio = float(t[0] @ one_hot[0]) if labels[0] != labels[1] else None
  if ratio is None:
    pytest.skip('the first pair shares a label')
  np.testing.assert_allclose(x, ratio * f + (1 - ratio) * other, rtol=1e-5,
                             atol=1e-3)
  np.testing.assert_allclose(t, ratio * one_hot + (1 - ratio) * other_hot,
                             rtol=1e-5, atol=1e-6)


def test_cutmix_ratio_is_the_area_kept():
  n, size = 8, 16
  # Constant images (value = row index) show which pixels came from where.
  images = jnp.asarray(np.arange(n, dtype=np.uint8)[:, None, None, None] *
                       np.ones((1, size, size, 1), np.uint8) * 20)
  labels = jnp.arange(n, dtype=jnp.int32)
  for seed in range(6):
    x, t = batch_augment.apply(Spec(cutmix_alpha=1.0), jax.random.key(seed),
                               images, labels, 10)
    kept = np.mean(np.asarray(x[0]) == 0.0)  # image 0 is all zeros
    np.testing.assert_allclose(float(t[0, 0]), kept, atol=1e-6)
    np.testing.assert_allclose(float(t[0, 1]), 1 - kept, atol=1e-6)


def test_soft_targets_and_label_smoothing():
  logits = jnp.asarray(np.random.default_rng(0).normal(size=(4, 5)),
                       jnp.float32)
  labels = jnp.asarray([0, 1, 2, 3])
  hard = steps.cross_entropy(logits, labels, 5, 0.1)
  soft = steps.cross_entropy(logits, jax.nn.one_hot(labels, 5), 5, 0.1)
  assert float(hard) == pytest.approx(float(soft), rel=1e-6)
  # Smoothing a mixture is mixing the smoothed targets (timm's mixup_target).
  t = 0.7 * jax.nn.one_hot(labels, 5) + 0.3 * jax.nn.one_hot(labels[::-1], 5)
  smoothed = 0.7 * (0.9 * jax.nn.one_hot(labels, 5) + 0.02) + 0.3 * (
      0.9 * jax.nn.one_hot(labels[::-1], 5) + 0.02)
  expected = -jnp.mean(jnp.sum(smoothed * jax.nn.log_softmax(logits), -1))
  assert float(steps.cross_entropy(logits, t, 5, 0.1)) == pytest.approx(
      float(expected), rel=1e-6)


_AUGMENTED = dict(mixup_alpha=0.8, cutmix_alpha=1.0, randaugment_num_ops=2,
                  randaugment_magnitude=9.0)


def test_augmented_run_trains_and_resumes_bitwise(tmp_path, straight_run):
  straight = str(tmp_path / 'straight')
  summary = loop.train_and_evaluate(quick_config(**_AUGMENTED), straight)
  assert summary['status'] == 'done'
  resumed = str(tmp_path / 'resumed')
  loop.train_and_evaluate(quick_config(**_AUGMENTED), resumed,
                           stop_after_steps=3)
  loop.train_and_evaluate(quick_config(**_AUGMENTED), resumed)
  assert_same_state(final_state(straight), final_state(resumed))
  # The augmentations are real: without them (the session's reference run,
  # the same config less the augmentations) it is another run.
  assert not all(np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(final_state(straight_run[0])), jax.tree.leaves(
          final_state(straight))))


@pytest.mark.parametrize('overrides,message', [
    (dict(mixup_alpha=-0.1), 'mixup_alpha=-0.1 is invalid'),
    (dict(cutmix_alpha=float('nan')), 'cutmix_alpha=nan is invalid'),
    (dict(mix_switch_prob=1.5), 'mix_switch_prob=1.5 is invalid'),
    (dict(randaugment_num_ops=-1), 'randaugment_num_ops=-1 is invalid'),
    (dict(randaugment_magnitude=11.0), 'randaugment_magnitude=11.0 is invalid'),
    (dict(mixup_alpha=0.2, batch_size=15), 'batch_size=15 is invalid'),
])
def test_bad_values_are_one_error(overrides, message):
  with pytest.raises(UserError, match=message):
    specs.read(quick_config(**overrides))


def test_defaults_are_off_and_old_configs_read():
  spec = specs.read(quick_config()).loop.augment
  assert spec == Spec() and not spec.active
