"""Input pipelines: one config string -> per-host numpy batches.

`config.dataset` picks the source:
  * a TFDS name (cifar10, mnist, imagenet2012, ...). Small fixed-shape
    datasets are loaded into memory, in full, on every host; large or
    variable-shape ones (imagenet2012) are streamed with tf.data, each host
    reading only its own shard.
  * 'folder:/path' -- an image-folder tree path/<split>/<class>/<image>,
    decoded once (in parallel) into memory on every host.
  * 'digits' -- scikit-learn's 8x8 digits, a single split named 'train'.

Split strings use TFDS slicing (`train[:90%]`, `train[:1000]`, `a+b`) for
every source. For folder and digits a slice is taken from a fixed seeded
shuffle, so `train[:90%]` and `train[90%:]` are disjoint and both hold every
class. The train stream is a pure function of (config.seed, step).
"""

import contextlib
import dataclasses
import functools
import os
import socket
import threading
import types
from typing import Iterator, NamedTuple

from absl import logging
import numpy as np

import tensorflow_datasets as tfds

from inception import augment, tf_quiet
from inception.errors import UserError

# Split membership must not follow config.seed, so this is a constant.
_SPLIT_SEED = 20240531
_MAX_IN_MEMORY_BYTES = 4 << 30
_AUGMENTS = ('cifar', 'imagenet', 'none')
_IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
_IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
# Where TFDS downloads from; INCEPTION_TFDS_PROBE=host:port points the
# reachability probe elsewhere (an air-gapped mirror, or a test).
_PROBE_ADDRESS = ('storage.googleapis.com', 443)
_ALTERNATIVES = ("use a TFDS name (e.g. cifar10, mnist), "
                 "'folder:/path/to/images' (path/<split>/<class>/<image>) "
                 "or 'digits'")
_SPLIT_HINT = 'use e.g. train, train[:90%], train[90%:] or train[:1000]'


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  num_classes: int
  class_names: tuple[str, ...]
  image_shape: tuple[int, int, int]  # (image_size, image_size, channels)
  num_train_examples: int
  num_eval_examples: int
  mean: tuple[float, ...]  # Per channel, on the [0, 255] scale.
  std: tuple[float, ...]


class _Config(NamedTuple):
  kind: str  # 'tfds', 'folder' or 'digits'.
  arg: str  # TFDS name or folder root.
  data_dir: str | None
  size: int
  channels: int
  augment: str


class _Data(NamedTuple):
  num_examples: int
  spec: str
  key: tuple | None = None  # _load_memory key of in-memory data.
  builder: object | None = None  # TFDS builder of streamed data.


def _one_line(e: BaseException) -> str:
  lines = [l.strip() for l in str(e).splitlines() if l.strip()]
  return lines[-1] if lines else type(e).__name__


def _parse(config) -> _Config:
  """Validates the config fields this module reads."""
  size, channels = int(config.image_size), int(config.channels)
  if size <= 0:
    raise UserError(f'image_size must be positive, got {size}; '
                    'set --config.image_size (e.g. 32)')
  if channels not in (1, 3):
    raise UserError(f'channels must be 1 or 3, got {channels}; '
                    'set --config.channels=1 or 3')
  aug = str(config.get('augment') or 'none').lower()
  if aug not in _AUGMENTS:
    raise UserError(f'unknown augment {aug!r}; set --config.augment to one '
                    f'of {", ".join(_AUGMENTS)}')
  name = str(config.get('dataset') or '').strip()
  data_dir = config.get('data_dir')
  data_dir = os.path.expanduser(data_dir) if data_dir else None
  kind, arg = 'tfds', name
  if name == 'digits':
    kind = 'digits'
  elif name.startswith('folder:'):
    kind, arg = 'folder', name[len('folder:'):].strip()
    if not arg:
      raise UserError("'folder:' needs a path; use "
                      '--config.dataset=folder:/path/to/images')
    arg = os.path.abspath(os.path.expanduser(arg))
  elif not name:
    raise UserError(f'config.dataset is empty; {_ALTERNATIVES}')
  return _Config(kind, arg, data_dir, size, channels, aug)


def _local_batch(config, process_index: int, process_count: int) -> int:
  b = int(config.batch_size)
  if process_count <= 0 or not 0 <= process_index < process_count:
    raise UserError(f'process_index {process_index} is out of range for '
                    f'process_count {process_count}')
  if b <= 0 or b % process_count:
    raise UserError(f'batch_size {b} must be a positive multiple of the '
                    f'process count {process_count}; change '
                    '--config.batch_size')
  return b // process_count


# ------------------------------------------------------------------ splits


def _resolve(spec: str, sizes: dict[str, int] | None):
  """Resolves a TFDS split string to [(split, start, stop)] with tfds's parser.

  With sizes None (unknown), only checks the syntax and returns [].
  """
  try:
    instruction = tfds.core.ReadInstruction.from_spec(spec)
    # to_absolute reads .num_examples (and .shard_lengths for 'shard' units).
    absolute = [] if sizes is None else instruction.to_absolute({
        k: types.SimpleNamespace(num_examples=n, shard_lengths=[n])
        for k, n in sizes.items()})
  except (ValueError, TypeError, KeyError, NotImplementedError) as e:
    known = f'; splits available: {", ".join(sizes)}' if sizes else ''
    raise UserError(f'bad split {spec!r} ({_one_line(e)}); '
                    f'{_SPLIT_HINT}{known}') from None
  return [(a.splitname, a.from_ or 0,
           sizes[a.splitname] if a.to is None else a.to) for a in absolute]


def _names(spec: str, available) -> list[str]:
  # Sizes are unknown before decoding, so resolve against huge fake ones just
  # to learn which splits the string names; real bounds are checked later.
  parts = _resolve(spec, {s: 1 << 40 for s in available})
  return list(dict.fromkeys(name for name, _, _ in parts))


def _slice(spec, available, load) -> tuple[np.ndarray, np.ndarray]:
  arrays = {n: load(n) for n in _names(spec, available)}
  parts = _resolve(spec, {n: len(a[1]) for n, a in arrays.items()})
  images = np.concatenate([arrays[n][0][a:b] for n, a, b in parts])
  labels = np.concatenate([arrays[n][1][a:b] for n, a, b in parts])
  return images, labels


def _shuffled(images, labels):
  order = np.random.default_rng(_SPLIT_SEED).permutation(len(labels))
  return images[order], labels[order]


# ---------------------------------------------------------- folder, digits


def _subdirs(path: str) -> list[str]:
  return sorted(e.name for e in os.scandir(path)
                if e.is_dir() and not e.name.startswith('.'))


def _folder_splits(root: str) -> list[str]:
  layout = f'{root}/<split>/<class>/<image> (e.g. {root}/train/cat/0001.jpg)'
  if not os.path.isdir(root):
    raise UserError(f'image folder {root} does not exist; point '
                    f'--config.dataset=folder:... at a tree {layout}')
  splits = _subdirs(root)
  if not splits:
    raise UserError(f'image folder {root} has no split subfolders; '
                    f'expected {layout}')
  return splits


def _folder_classes(root: str, split: str) -> list[str]:
  classes = _subdirs(os.path.join(root, split))
  if not classes:
    raise UserError(f'split folder {root}/{split} has no class subfolders; '
                    f'expected {root}/{split}/<class>/<image>')
  return classes


@functools.lru_cache(maxsize=4)
def _folder_split(root, split, classes, size, channels):
  """Decodes root/split once, in the fixed seeded shuffle order."""
  files, labels = [], []
  for name in _folder_classes(root, split):
    if name not in classes:
      raise UserError(f'class folder {root}/{split}/{name} is not among the '
                      f'train split classes {list(classes)}; remove it or '
                      'add it to the train split')
    d = os.path.join(root, split, name)
    found = sorted(e.name for e in os.scandir(d)
                   if e.is_file() and not e.name.startswith('.'))
    if not found:
      raise UserError(f'class folder {d} holds no files; add its images or '
                      'remove the folder (an empty class would be a class '
                      'with no examples)')
    files += [os.path.join(d, f) for f in found]
    labels += [classes.index(name)] * len(found)
  images, ok = augment.decode_files(np.array(files, dtype=object), size,
                                    channels)
  if not ok.all():
    bad = [files[i] for i in np.flatnonzero(~ok)]
    logging.warning('Skipped %d unreadable or non-image files under %s/%s, '
                    'e.g. %s', len(bad), root, split, ', '.join(bad[:5]))
  if not ok.any():
    raise UserError(f'no readable images under {root}/{split}; expected '
                    f'{root}/{split}/<class>/<image> JPEG/PNG/GIF/BMP files')
  return _shuffled(images[ok], np.asarray(labels, np.int32)[ok])


@functools.lru_cache(maxsize=2)
def _digits_split(size, channels):
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
  images = augment.conform(images, size, channels).numpy()
  return _shuffled(images, digits.target.astype(np.int32))


# ------------------------------------------------------------------ TFDS


def _tfds_mocked() -> bool:
  # tfds.testing.mock_data swaps in a no-op download_and_prepare and fakes
  # the data, so "not prepared" means nothing under it.
  fn = tfds.core.DatasetBuilder.download_and_prepare
  return fn.__module__ != 'tensorflow_datasets.core.dataset_builder'


def _network_reachable(timeout: float = 2.0) -> bool:
  """Whether the TFDS download host answers, DNS included, within timeout."""
  reached, done = [], threading.Event()

  def probe():
    with contextlib.suppress(OSError):
      host, _, port = os.environ.get('INCEPTION_TFDS_PROBE', '').rpartition(':')
      address = (host, int(port)) if host else _PROBE_ADDRESS
      socket.create_connection(address, timeout=timeout).close()
      reached.append(True)
    done.set()

  threading.Thread(target=probe, daemon=True).start()
  done.wait(timeout)  # A thread, as DNS lookups ignore socket timeouts.
  return bool(reached)


@contextlib.contextmanager
def _quiet_tfds():
  """Hides TFDS's warnings about an empty data_dir: our error explains it."""
  previous = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    yield
  finally:
    logging.set_verbosity(previous)


@functools.lru_cache(maxsize=16)
def _builder(name: str, data_dir: str | None, mocked: bool):
  """Returns a prepared TFDS builder, failing fast when it can't be had."""
  del mocked  # Only part of the cache key.
  with _quiet_tfds():
    builder = _prepared_builder(name, data_dir)
  tf_quiet.load()  # before tfds reads the data and imports TF itself
  return builder


def _prepared_builder(name: str, data_dir: str | None):
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise UserError(f'unknown dataset {name!r}; {_ALTERNATIVES}') from None
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f'cannot open TFDS dataset {name!r} ({_one_line(e)}); '
                    f'{_ALTERNATIVES}') from None
  keys, features = builder.info.supervised_keys, builder.info.features
  if (not keys or len(keys) != 2
      or not isinstance(features[keys[0]], tfds.features.Image)
      or not isinstance(features[keys[1]], tfds.features.ClassLabel)):
    raise UserError(f'TFDS dataset {name!r} is not an (image, label) '
                    f'classification dataset; {_ALTERNATIVES}')
  if _tfds_mocked() or builder.is_prepared():
    return builder
  where = data_dir or 'the default TFDS data_dir'
  fix = ('pass --config.data_dir=<dir where it is prepared>, or use '
         '--config.dataset=folder:/path/to/images or --config.dataset=digits')
  if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
    raise UserError(f'TFDS dataset {name!r} is not prepared in {where} and '
                    f'needs a manual download; {fix}')
  # Without this probe tfds retries downloads for minutes before failing.
  if not _network_reachable():
    raise UserError(f'TFDS dataset {name!r} is not prepared in {where} and '
                    f'cannot be downloaded (no network); {fix}')
  tf_quiet.load()  # before tfds imports TF itself
  try:
    builder.download_and_prepare()
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f'downloading TFDS dataset {name!r} failed '
                    f'({_one_line(e)}); {fix}') from None
  return builder


# ------------------------------------------------------------ loading/info


@functools.lru_cache(maxsize=8)
def _load_memory(key) -> tuple[np.ndarray, np.ndarray]:
  """Loads one split spec of an in-memory source as read-only arrays."""
  c, spec, classes, mocked = key
  if c.kind == 'digits':
    images, labels = _slice(spec, ['train'],
                            lambda _: _digits_split(c.size, c.channels))
  elif c.kind == 'folder':
    images, labels = _slice(spec, _folder_splits(c.arg), lambda s: (
        _folder_split(c.arg, s, classes, c.size, c.channels)))
  else:
    ds = _builder(c.arg, c.data_dir, mocked).as_dataset(
        split=spec, as_supervised=True, shuffle_files=False)
    images, labels = augment.conform_dataset(ds, c.size, c.channels)
  images.flags.writeable = labels.flags.writeable = False  # Shared by cache.
  return images, labels


def _classes(config, c: _Config) -> tuple[str, ...]:
  if c.kind == 'digits':
    return tuple(str(i) for i in range(10))
  if c.kind == 'folder':
    splits = _names(str(config.train_split), _folder_splits(c.arg))
    return tuple(sorted({n for s in splits for n in _folder_classes(c.arg, s)}))
  builder = _builder(c.arg, c.data_dir, _tfds_mocked())
  return tuple(builder.info.features[builder.info.supervised_keys[1]].names)


def _open(config, spec) -> _Data:
  """Locates a split; in-memory ones are loaded (once) by _load_memory(key)."""
  c, spec, mocked = _parse(config), str(spec), _tfds_mocked()
  if c.kind == 'tfds':
    builder = _builder(c.arg, c.data_dir, mocked)
    sizes = {k: v.num_examples for k, v in builder.info.splits.items()}
    # Mocked data knows no split sizes (and tfds then accepts any name).
    n = sum(b - a for _, a, b in _resolve(spec, sizes or None))
    image_key = builder.info.supervised_keys[0]
    if (None in builder.info.features[image_key].shape
        or n * c.size**2 * c.channels > _MAX_IN_MEMORY_BYTES):
      n = n or int(builder.as_dataset(split=spec).cardinality())
      return _Data(n, spec, builder=builder)
  classes = _classes(config, c) if c.kind == 'folder' else None
  key = (c._replace(augment=''), spec, classes, mocked)  # Shared by augments.
  return _Data(len(_load_memory(key)[1]), spec, key=key)


@functools.lru_cache(maxsize=4)
def _train_stats(key):
  return augment.mean_std(_load_memory(key)[0])


def get_info(config) -> DatasetInfo:
  """Describes the dataset that `config` selects (loading it if in-memory)."""
  c = _parse(config)
  train = _open(config, config.train_split)
  if not train.num_examples:
    raise UserError(f'train split {config.train_split!r} is empty; '
                    f'{_SPLIT_HINT}')
  eval_spec = config.get('eval_split')
  n_eval = _open(config, eval_spec).num_examples if eval_spec else 0
  if train.key:
    mean, std = _train_stats(train.key)
  elif c.channels == 3:  # Too big to scan: the well-known ImageNet values.
    mean, std = _IMAGENET_MEAN, _IMAGENET_STD
  else:
    luma = (0.299, 0.587, 0.114)
    mean = (float(np.dot(luma, _IMAGENET_MEAN)),)
    std = (float(np.dot(luma, _IMAGENET_STD)),)
  names = _classes(config, c)
  return DatasetInfo(len(names), names, (c.size, c.size, c.channels),
                     train.num_examples, n_eval, mean, std)


def clear_caches():
  """Drops every cached array and builder (e.g. between tests)."""
  for fn in (_builder, _load_memory, _folder_split, _digits_split,
             _train_stats, augment.permutation):
    fn.cache_clear()


# ------------------------------------------------------------------ batches


def train_batches(config, *, start_step: int = 0, process_index: int = 0,
                  process_count: int = 1) -> Iterator[dict]:
  """Infinite train stream for this process, starting at `start_step`.

  Step s is batch s % steps_per_epoch of epoch s // steps_per_epoch, whose
  order and augmentation depend only on (config.seed, epoch, offset), so
  resuming computes only what it yields. Process p gets slice p of each
  global batch (in-memory) or its own shard (streamed).

  Returns:
    Iterator of {'image': uint8 [B/P, H, W, C], 'label': int32 [B/P]}.
  """
  c = _parse(config)
  local = _local_batch(config, process_index, process_count)
  data = _open(config, config.train_split)
  seed, b = int(config.seed) % (1 << 63), int(config.batch_size)
  if data.builder:
    return augment.stream_train_batches(
        data.builder, data.spec, data.num_examples, c.augment, c.size,
        c.channels, local, seed, int(start_step), process_index,
        process_count)
  if data.num_examples < b:
    raise UserError(f'batch_size {b} is larger than the train split '
                    f'{data.spec!r} ({data.num_examples} examples); lower '
                    '--config.batch_size')
  images, labels = _load_memory(data.key)
  return augment.memory_train_batches(
      images, labels, c.augment, seed, b, process_index * local, local,
      int(start_step))


def eval_batches(config, split: str | None = None, *, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict]:
  """One pass over `split` (default config.eval_split), padded to full batches.

  Returns:
    Iterator of {'image': uint8 [B/P, H, W, C], 'label': int32 [B/P],
    'mask': bool [B/P]}, mask False on padding. Process p gets slice p of
    every global batch (in-memory) or its own shard (streamed).
  """
  c = _parse(config)
  local = _local_batch(config, process_index, process_count)
  spec = split or config.get('eval_split')
  if not spec:
    raise UserError('no eval split given; set --config.eval_split '
                    '(e.g. test or train[90%:])')
  data = _open(config, spec)
  if data.builder:
    return augment.stream_eval_batches(
        data.builder, data.spec, data.num_examples, c.augment, c.size,
        c.channels, local, process_index, process_count)
  images, labels = _load_memory(data.key)
  return augment.memory_eval_batches(images, labels, c.augment,
                                     int(config.batch_size),
                                     process_index * local, local)
