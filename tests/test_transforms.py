"""Each augmentation is defined once: both pipelines apply the same transform."""
import itertools

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from inception import data, transforms


def test_inception_crop_per_image_equals_batched():
  """The streamed path crops one record at a time, in memory a whole batch."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (6, 24, 24, 3), dtype=np.uint8)
  params = transforms.sample_inception(np.random.default_rng(1), 6)
  batched = transforms.apply_inception(images, params, 16).numpy()
  for i in range(6):
    one = transforms.apply_inception(images[i:i + 1], params[i:i + 1], 16)
    np.testing.assert_array_equal(one.numpy()[0], batched[i])
  assert batched.shape == (6, 16, 16, 3)


def test_cifar_crop_is_a_shift_and_flip():
  images = np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8, 1)
  out = transforms.apply_cifar(images, np.array([[1, 1, 0], [1, 1, 1]]))
  np.testing.assert_array_equal(out[0], images[0])  # centre crop: identity
  np.testing.assert_array_equal(out[1], images[1, :, ::-1])  # flipped


def test_streamed_cifar_augmentation_is_the_shared_transform():
  """Every streamed train image is apply_cifar of a decoded record."""
  config = ml_collections.ConfigDict(dict(
      dataset='imagenet2012', data_dir=None, train_split='train',
      eval_split='validation', image_size=16, channels=3, augment='cifar',
      batch_size=5, seed=4))
  plain = dict(config.to_dict(), augment='none')
  with tfds.testing.mock_data(num_examples=10,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    spec = data.parse(config)
    train = next(data.train_batches(spec))['image']
    originals = np.concatenate([b['image'] for b in data.eval_batches(
        data.parse(ml_collections.ConfigDict(plain)), 'train')])
  pad = 16 // 8
  grid = [np.array([[dy, dx, flip]]) for dy, dx, flip in itertools.product(
      range(2 * pad + 1), range(2 * pad + 1), (0, 1))]
  candidates = [transforms.apply_cifar(o[None], p)[0]
                for o in originals for p in grid]
  for image in train:
    assert any(np.array_equal(image, c) for c in candidates)
