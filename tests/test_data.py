"""Tests for inception.data.loader: offline, small, generated or mocked data only."""

import itertools
import logging
import os
import subprocess
import sys
import time

import ml_collections
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from conftest import REPO
from inception import data
from inception.data import sources, tfds_source
from inception.errors import UserError

CLASSES = ('zebra', 'apple', 'mango')  # Deliberately not sorted.
PER_CLASS = 20


def make_config(**overrides):
  config = ml_collections.ConfigDict(dict(
      dataset='digits', data_dir=None, train_split='train[:90%]',
      eval_split='train[90%:]', image_size=8, channels=1, augment='none',
      batch_size=64, seed=0))
  config.update(overrides)
  return config


def write_folder(root, split='train', classes=CLASSES, per_class=PER_CLASS,
                 mode='RGB', shape=(8, 8)):
  """Writes PNGs whose pixels encode a unique id (R + 256 G) and class (B)."""
  uid = 0
  for c, name in enumerate(classes):
    os.makedirs(os.path.join(root, split, name), exist_ok=True)
    for i in range(per_class):
      pixels = np.zeros(shape + (3,), np.uint8)
      pixels[..., 0], pixels[..., 1], pixels[..., 2] = uid % 256, uid // 256, c
      image = Image.fromarray(pixels)
      if mode == 'L':
        image = Image.fromarray(np.full(shape, 10 * c + i, np.uint8), 'L')
      image.save(os.path.join(root, split, name, f'{i:04d}.png'))
      uid += 1
  return str(root)


def ids(images):
  images = images.astype(int)
  return images[..., 0, 0, 0] + 256 * images[..., 0, 0, 1]


def take(iterator, n):
  return list(itertools.islice(iterator, n))


def eval_all(config, split=None, **kw):
  batches = list(data.eval_batches(data.parse(config), split, **kw))
  mask = np.concatenate([b['mask'] for b in batches])
  images = np.concatenate([b['image'] for b in batches])[mask]
  labels = np.concatenate([b['label'] for b in batches])[mask]
  return batches, images, labels


@pytest.fixture(autouse=True)
def _fresh_caches():
  data.clear_caches()
  yield
  data.clear_caches()


@pytest.fixture
def folder(tmp_path):
  return write_folder(tmp_path / 'imgs')


def folder_config(root, **overrides):
  defaults = dict(dataset=f'folder:{root}', image_size=8, channels=3,
                  train_split='train[:50%]', eval_split='train[50%:]',
                  batch_size=8)
  return make_config(**{**defaults, **overrides})


# ------------------------------------------------------------------ digits


def test_digits_info_and_shapes():
  config = make_config()
  info = data.get_info(data.parse(config))
  assert info.num_classes == 10
  assert info.class_names == tuple('0123456789')
  assert info.image_shape == (8, 8, 1)
  assert info.num_train_examples + info.num_eval_examples == 1797
  assert info.num_eval_examples == 180
  assert len(info.mean) == len(info.std) == 1
  assert 30 < info.mean[0] < 120 and 30 < info.std[0] < 120
  batch = next(data.train_batches(data.parse(config)))
  assert batch['image'].shape == (64, 8, 8, 1)
  assert batch['image'].dtype == np.uint8
  assert batch['label'].shape == (64,) and batch['label'].dtype == np.int32
  assert batch['image'].max() == 255  # 0..16 scaled to the full range.


def test_digits_split_partitions_and_holds_every_class():
  config = make_config(batch_size=100)
  _, train_x, train_y = eval_all(config, 'train[:90%]')
  _, eval_x, eval_y = eval_all(config, 'train[90%:]')
  _, all_x, _ = eval_all(config, 'train')
  assert len(train_y) == 1617 and len(eval_y) == 180
  assert set(train_y) == set(eval_y) == set(range(10))
  # The two halves are exactly the whole split, as multisets of images.
  halves = sorted(x.tobytes() for x in np.concatenate([train_x, eval_x]))
  assert halves == sorted(x.tobytes() for x in all_x)


def test_digits_channels_and_resize():
  config = make_config(channels=3, image_size=16)
  info = data.get_info(data.parse(config))
  assert info.image_shape == (16, 16, 3)
  image = next(data.train_batches(data.parse(config)))['image']
  assert image.shape == (64, 16, 16, 3)
  np.testing.assert_array_equal(image[..., 0], image[..., 2])


# ------------------------------------------------------------------ folder


def test_folder_class_names_sorted_and_counts(folder):
  info = data.get_info(data.parse(folder_config(folder)))
  assert info.class_names == ('apple', 'mango', 'zebra')
  assert info.num_classes == 3
  assert info.num_train_examples == info.num_eval_examples == 30
  assert info.image_shape == (8, 8, 3) and len(info.mean) == 3


def test_folder_split_disjoint_every_class_both_sides(folder):
  config = folder_config(folder)
  _, train_x, train_y = eval_all(config, 'train[:50%]')
  _, eval_x, eval_y = eval_all(config, 'train[50%:]')
  assert set(ids(train_x)).isdisjoint(ids(eval_x))
  assert set(ids(train_x)) | set(ids(eval_x)) == set(range(60))
  assert set(train_y) == set(eval_y) == {0, 1, 2}
  # Labels follow sorted class names: blue channel holds the CLASSES index.
  names = [CLASSES[c] for c in train_x[:, 0, 0, 2]]
  assert [sorted(CLASSES).index(n) for n in names] == list(train_y)
  # Absolute slicing works too, and is stable across (cached-away) reloads.
  first = ids(eval_all(config, 'train[:7]')[1])
  data.clear_caches()
  assert len(first) == 7
  np.testing.assert_array_equal(first, ids(eval_all(config, 'train[:7]')[1]))


def test_folder_skips_corrupt_and_non_image_files(folder, caplog):
  bad = os.path.join(folder, 'train', 'apple', 'broken.jpg')
  with open(bad, 'wb') as f:
    f.write(b'\xff\xd8 definitely not a jpeg')
  with open(os.path.join(folder, 'train', 'mango', 'notes.txt'), 'w') as f:
    f.write('hello')
  config = folder_config(folder, train_split='train', eval_split='')
  with caplog.at_level(logging.WARNING):
    info = data.get_info(data.parse(config))
    take(data.train_batches(data.parse(config)), 1)
  assert info.num_train_examples == 60
  warnings = [r.getMessage() for r in caplog.records if 'Skipped' in
              r.getMessage()]
  assert len(warnings) == 1, warnings
  assert 'Skipped 2 ' in warnings[0] and 'broken.jpg' in warnings[0]


def test_folder_grey_to_rgb_and_resize(tmp_path):
  root = write_folder(tmp_path / 'grey', mode='L', shape=(12, 6))
  config = folder_config(root, image_size=4, channels=3)
  assert data.get_info(data.parse(config)).image_shape == (4, 4, 3)
  image = next(data.train_batches(data.parse(config)))['image']
  assert image.shape == (8, 4, 4, 3)
  np.testing.assert_array_equal(image[..., 0], image[..., 1])
  np.testing.assert_array_equal(image[..., 0], image[..., 2])


def test_folder_rgb_to_grey(folder):
  config = folder_config(folder, channels=1)
  assert data.get_info(data.parse(config)).mean.__len__() == 1
  _, grey, _ = eval_all(config)
  rgb_config = folder_config(folder, channels=3)
  _, rgb, _ = eval_all(rgb_config)
  luma = np.round(rgb.astype(np.float64) @ [0.299, 0.587, 0.114])
  assert grey.shape == rgb.shape[:-1] + (1,)
  np.testing.assert_allclose(grey[..., 0], luma, atol=1)


@pytest.mark.parametrize('setup, expected', [
    ('missing', 'does not exist'),
    ('empty', 'no split subfolders'),
    ('no_classes', 'no class subfolders'),
    ('missing_split', "Unknown split 'val'"),
])
def test_folder_errors(tmp_path, setup, expected):
  root = tmp_path / 'root'
  if setup != 'missing':
    root.mkdir()
  if setup == 'no_classes':
    (root / 'train').mkdir()
  if setup == 'missing_split':
    write_folder(root, per_class=2)
  split = 'val' if setup == 'missing_split' else 'train'
  config = folder_config(root, train_split=split, eval_split='')
  with pytest.raises(UserError) as e:
    data.get_info(data.parse(config))
  message = str(e.value)
  assert expected in message and '\n' not in message
  assert str(root) in message or 'splits available: train' in message


# ------------------------------------------------------------ user errors


@pytest.mark.parametrize('split', ['train[[', 'train[:200%]', 'train[5]',
                                   'nosuch', 'train[:5000]'])
def test_bad_split_is_user_error(split):
  with pytest.raises(UserError, match='bad split') as e:
    data.get_info(data.parse(make_config(train_split=split)))
  assert '\n' not in str(e.value)


def test_unknown_dataset_is_user_error():
  with pytest.raises(UserError, match='unknown dataset') as e:
    data.get_info(data.parse(make_config(dataset='no_such_dataset_xyz')))
  assert 'folder:' in str(e.value) and 'digits' in str(e.value)


def test_bad_batch_size_for_process_count():
  config = make_config(batch_size=10)
  with pytest.raises(UserError, match='multiple'):
    data.train_batches(data.parse(config), process_count=4)
  with pytest.raises(UserError, match='multiple'):
    data.eval_batches(data.parse(config), process_count=3)
  with pytest.raises(UserError, match='larger than the train split'):
    data.train_batches(data.parse(make_config(batch_size=4096)))


def test_absent_tfds_dataset_fails_fast(tmp_path, monkeypatch):
  monkeypatch.setattr(tfds_source, 'network_reachable', lambda timeout=2.0: False)
  config = make_config(dataset='cifar10', data_dir=str(tmp_path),
                       train_split='train', eval_split='test')
  start = time.monotonic()
  with pytest.raises(UserError) as e:
    data.get_info(data.parse(config))
  assert time.monotonic() - start < 5
  message = str(e.value)
  assert 'not prepared' in message and '\n' not in message
  for alternative in ('folder:', 'digits', '--config.data_dir'):
    assert alternative in message


def test_network_probe_is_bounded():
  start = time.monotonic()
  assert tfds_source.network_reachable(timeout=0.5) in (True, False)
  assert time.monotonic() - start < 1.5


# ------------------------------------------------------------------ TFDS


def test_tfds_mocked_in_memory():
  config = make_config(dataset='cifar10', data_dir='/nonexistent',
                       train_split='train', eval_split='test', image_size=32,
                       channels=3, augment='cifar', batch_size=8)
  with tfds.testing.mock_data(num_examples=20,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    info = data.get_info(data.parse(config))
    # Mocked metadata has no label names, so ClassLabel falls back to digits.
    assert info.num_classes == len(info.class_names) == 10
    assert info.image_shape == (32, 32, 3)
    assert info.num_train_examples == info.num_eval_examples == 20
    batch = next(data.train_batches(data.parse(config)))
    assert batch['image'].shape == (8, 32, 32, 3)
    batches = list(data.eval_batches(data.parse(config)))
  assert [int(b['mask'].sum()) for b in batches] == [8, 8, 4]


def test_tfds_mocked_streamed_resume():
  config = make_config(dataset='imagenet2012', train_split='train',
                       eval_split='validation', image_size=16, channels=3,
                       augment='imagenet', batch_size=4, seed=3)
  with tfds.testing.mock_data(num_examples=10,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    info = data.get_info(data.parse(config))
    assert info.num_classes == 1000 and info.image_shape == (16, 16, 3)
    fresh = take(data.train_batches(data.parse(config)), 3)
    resumed = take(data.train_batches(data.parse(config), start_step=2), 1)
    assert fresh[0]['image'].shape == (4, 16, 16, 3)
    np.testing.assert_array_equal(fresh[2]['image'], resumed[0]['image'])
    batches = list(data.eval_batches(data.parse(config)))
  assert [int(b['mask'].sum()) for b in batches] == [4, 4, 2]


# ------------------------------------------------------- train stream


def test_resume_equals_tail_of_fresh_stream():
  config = make_config(augment='cifar', batch_size=256)  # 6 steps per epoch.
  fresh = take(data.train_batches(data.parse(config)), 14)
  for start in (1, 5, 6, 11):
    resumed = take(data.train_batches(data.parse(config), start_step=start), 14 - start)
    for a, b in zip(fresh[start:], resumed):
      np.testing.assert_array_equal(a['image'], b['image'])
      np.testing.assert_array_equal(a['label'], b['label'])


def test_epochs_cover_the_split_and_reshuffle(folder):
  config = folder_config(folder, train_split='train', eval_split='',
                         batch_size=12)  # 60 examples: 5 steps per epoch.
  batches = take(data.train_batches(data.parse(config)), 10)
  epoch0 = np.concatenate([ids(b['image']) for b in batches[:5]])
  epoch1 = np.concatenate([ids(b['image']) for b in batches[5:]])
  assert sorted(epoch0) == sorted(epoch1) == list(range(60))
  assert not np.array_equal(epoch0, epoch1)


def test_seed_controls_the_stream():
  first = take(data.train_batches(data.parse(make_config(seed=1, augment='cifar'))), 2)
  same = take(data.train_batches(data.parse(make_config(seed=1, augment='cifar'))), 2)
  other = take(data.train_batches(data.parse(make_config(seed=2, augment='cifar'))), 2)
  for a, b in zip(first, same):
    np.testing.assert_array_equal(a['image'], b['image'])
  assert not np.array_equal(first[0]['image'], other[0]['image'])


def test_processes_partition_each_global_batch():
  for augment in ('cifar', 'imagenet'):
    config = make_config(augment=augment, batch_size=64)
    whole = take(data.train_batches(data.parse(config)), 3)
    parts = [take(data.train_batches(data.parse(config), process_index=p,
                                     process_count=2), 3) for p in (0, 1)]
    for step in range(3):
      assert parts[0][step]['image'].shape == (32, 8, 8, 1)
      for key in ('image', 'label'):
        joined = np.concatenate([parts[0][step][key], parts[1][step][key]])
        np.testing.assert_array_equal(joined, whole[step][key])


def test_eval_covers_every_example_once(folder):
  config = folder_config(folder, train_split='train', eval_split='train',
                         batch_size=16)  # 60 examples: 4 batches, 4 padding.
  batches, images, _ = eval_all(config)
  assert len(batches) == 4
  assert all(b['image'].shape == (16, 8, 8, 3) for b in batches)
  assert all(b['mask'].dtype == bool for b in batches)
  assert batches[-1]['mask'].sum() == 12
  assert not batches[-1]['image'][~batches[-1]['mask']].any()
  assert sorted(ids(images)) == list(range(60))
  # Fixed order: a second pass is identical.
  np.testing.assert_array_equal(images, eval_all(config)[1])
  # Two processes: each gets its slice of every global batch.
  parts = [list(data.eval_batches(data.parse(config), process_index=p, process_count=2))
           for p in (0, 1)]
  assert len(parts[0]) == len(parts[1]) == 4
  for k, batch in enumerate(batches):
    for key in ('image', 'label', 'mask'):
      joined = np.concatenate([parts[0][k][key], parts[1][k][key]])
      np.testing.assert_array_equal(joined, batch[key])


def test_cifar_augment_changes_train_not_eval():
  plain = make_config(augment='none', image_size=16, batch_size=128)
  augmented = make_config(augment='cifar', image_size=16, batch_size=128)
  a = next(data.train_batches(data.parse(plain)))
  b = next(data.train_batches(data.parse(augmented)))
  assert a['image'].shape == b['image'].shape == (128, 16, 16, 1)
  np.testing.assert_array_equal(a['label'], b['label'])  # Same order.
  changed = (a['image'] != b['image']).any(axis=(1, 2, 3))
  assert changed.mean() > 0.8
  for x, y in zip(data.eval_batches(data.parse(plain)), data.eval_batches(data.parse(augmented))):
    np.testing.assert_array_equal(x['image'], y['image'])


def test_imagenet_augment_shapes_and_deterministic_eval():
  config = make_config(augment='imagenet', image_size=16, channels=3)
  batch = next(data.train_batches(data.parse(config)))
  assert batch['image'].shape == (64, 16, 16, 3)
  first, second = (next(data.eval_batches(data.parse(config))) for _ in range(2))
  np.testing.assert_array_equal(first['image'], second['image'])
  plain = next(data.eval_batches(data.parse(make_config(image_size=16, channels=3))))
  assert not np.array_equal(first['image'], plain['image'])  # Center crop.


def test_digits_are_scikit_learns_without_importing_it():
  """Read from scikit-learn's CSV file: the same arrays as ``load_digits``."""
  code = ('import sys; from inception.data import sources; '
          'x, y = sources._load_digits(); '
          'print(x.shape, y.shape, "sklearn" in sys.modules)')
  out = subprocess.run([sys.executable, '-c', code], cwd=REPO, check=True,
                       capture_output=True, text=True).stdout.split()
  assert out == ['(1797,', '8,', '8)', '(1797,)', 'False']
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  pixels, target = sources._load_digits()  # pylint: disable=protected-access
  np.testing.assert_array_equal(pixels, digits.images)
  np.testing.assert_array_equal(target, digits.target)
