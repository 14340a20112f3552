"""Each augmentation is defined once: both pipelines apply the same transform."""
import itertools

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from inception import data
from inception.data import transforms


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


def _jpeg_folder(tmp_path, sizes):
  """JPEG files of smooth random images (JPEG-friendly), one per size."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  files = []
  for i, (h, w) in enumerate(sizes):
    small = rng.integers(0, 256, (max(h // 4, 1), max(w // 4, 1), 3))
    image = Image.fromarray(small.astype(np.uint8)).resize((w, h))
    files.append(str(tmp_path / f'{i}.jpg'))
    image.save(files[-1], quality=90)
  (tmp_path / 'bad.jpg').write_bytes(b'not an image')
  return np.array(files + [str(tmp_path / 'bad.jpg')], dtype=object)


def test_pillow_decoding_agrees_with_tensorflow(tmp_path):
  """Without TensorFlow, folders decode through Pillow to nearly the same pixels."""
  files = _jpeg_folder(tmp_path, [(32, 32)] * 4)
  tf_images, tf_ok = transforms.decode_files(files, 32, 3)
  pil_images, pil_ok = transforms._decode_files_pillow(files, 32, 3)  # pylint: disable=protected-access
  np.testing.assert_array_equal(tf_ok, [True] * 4 + [False])
  np.testing.assert_array_equal(pil_ok, tf_ok)
  diff = np.abs(tf_images.astype(int) - pil_images.astype(int))[:4]
  # Another IDCT: a level or two on average, a few levels at most.
  assert diff.mean() < 2 and diff.max() <= 12, (diff.mean(), diff.max())
  grey, _ = transforms._decode_files_pillow(files, 32, 1)  # pylint: disable=protected-access
  assert grey.shape == (5, 32, 32, 1)
  assert np.abs(grey[:4, ..., 0].astype(int)
                - pil_images[:4].mean(-1)).mean() < 20


def test_pillow_decoding_resizes_and_center_crops(tmp_path):
  files = _jpeg_folder(tmp_path, [(48, 64)])[:1]
  images, ok = transforms._decode_files_pillow(files, 16, 3)  # pylint: disable=protected-access
  tf_images, _ = transforms.decode_files(files, 16, 3)
  assert ok.all() and images.shape == (1, 16, 16, 3)
  # Bilinear filters differ in their taps: close, not equal.
  assert np.abs(images.astype(int) - tf_images.astype(int)).mean() < 12


def test_decoding_without_tensorflow_takes_the_pillow_path(tmp_path, monkeypatch):
  from inception.data import tf_quiet  # pylint: disable=g-import-not-at-top
  files = _jpeg_folder(tmp_path, [(32, 32)] * 2)
  monkeypatch.setattr(tf_quiet, 'available', lambda: False)
  images, ok = transforms.decode_files(files, 32, 3)
  expected, _ = transforms._decode_files_pillow(files, 32, 3)  # pylint: disable=protected-access
  np.testing.assert_array_equal(images, expected)
  np.testing.assert_array_equal(ok, [True, True, False])
