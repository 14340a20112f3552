"""Where examples come from: the data spec, split strings, and the sources.

`config.dataset` picks the source:
  * a TFDS name (cifar10, mnist, imagenet2012, ...). Small fixed-shape
    datasets are loaded into memory, in full, on every host; large or
    variable-shape ones (imagenet2012) are streamed, each host reading only
    its own shard.
  * 'folder:/path' -- an image-folder tree path/<split>/<class>/<image>,
    decoded once (in parallel) into memory on every host.
  * 'digits' -- scikit-learn's 8x8 digits, a single split named 'train'.

Split strings use TFDS slicing (`train[:90%]`, `train[:1000]`, `a+b`) for
every source. For folder and digits a slice is taken from a fixed seeded
shuffle, so `train[:90%]` and `train[90%:]` are disjoint and both hold every
class.
"""

import dataclasses
import functools
import importlib.util
import math
import os
import types
from typing import NamedTuple

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from inception.data import tfds_source, transforms
from inception.errors import UserError

# Split membership must not follow config.seed, so this is a constant.
_SPLIT_SEED = 20240531
_MAX_IN_MEMORY_BYTES = 4 << 30
SPLIT_HINT = 'use e.g. train, train[:90%], train[90%:] or train[:1000]'
AUGMENTS = ('cifar', 'imagenet', 'none')  # train-time augmentation recipes


class Source(NamedTuple):
  """What is decoded: the dataset and the image shape it is conformed to."""
  kind: str  # 'tfds', 'folder' or 'digits'.
  arg: str  # TFDS name or folder root.
  data_dir: str | None
  size: int
  channels: int

  @property
  def label(self) -> str:
    """As the config names it: 'digits', 'folder:/abs/path' or a TFDS name."""
    return {'tfds': self.arg, 'folder': f'folder:{self.arg}'}.get(
        self.kind, self.kind)


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """The data fields of a config, parsed and checked once."""
  source: Source
  augment: str  # One of AUGMENTS.
  train_split: str
  eval_split: str  # '' when there is none.
  batch_size: int  # Global, over all processes.
  seed: int


class Split(NamedTuple):
  """One split string of a source, located (and, in memory, loaded)."""
  num_examples: int
  spec: str
  key: tuple | None = None  # load_memory key of in-memory data.
  builder: object | None = None  # TFDS builder of streamed data.


def _last_line(e: BaseException) -> str:
  # tfds's split errors put the useful part last.
  lines = [l.strip() for l in str(e).splitlines() if l.strip()]
  return lines[-1] if lines else type(e).__name__


def parse(config) -> DataSpec:
  """Validates the config's data fields; UserError on a bad one."""
  size, channels = int(config.image_size), int(config.channels)
  if size <= 0:
    raise UserError(f'image_size must be positive, got {size}; '
                    'set --config.image_size (e.g. 32)')
  if channels not in (1, 3):
    raise UserError(f'channels must be 1 or 3, got {channels}; '
                    'set --config.channels=1 or 3')
  aug = str(config.get('augment') or 'none').lower()
  if aug not in AUGMENTS:
    raise UserError(f'unknown augment {aug!r}; set --config.augment to one '
                    f'of {", ".join(AUGMENTS)}')
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
    raise UserError(f'config.dataset is empty; {tfds_source.ALTERNATIVES}')
  return DataSpec(Source(kind, arg, data_dir, size, channels), aug,
                  str(config.train_split), str(config.get('eval_split') or ''),
                  int(config.batch_size), int(config.seed) % (1 << 63))


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
    raise UserError(f'bad split {spec!r} ({_last_line(e)}); '
                    f'{SPLIT_HINT}{known}') from None
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


def _parts(spec: str) -> list:
  """The ``tfds.core.ReadInstruction`` of each ``+``-joined part of ``spec``."""
  stack, parts = [tfds.core.ReadInstruction.from_spec(spec)], []
  while stack:
    node = stack.pop()
    if hasattr(node, 'left'):  # a sum of splits
      stack += [node.right, node.left]
    else:
      parts.append(node)
  return parts


def _relative(part):
  """``(start, stop, unit)`` of a slice in its own unit, or None.

  The whole split is ``(0, inf, None)``, in any unit. None when the size of
  the split is needed to place it: shards, negative absolute indices.
  """
  start, stop = part.from_, part.to
  if start is None and stop is None:
    return 0, math.inf, None
  if part.unit == '%':
    start = 0 if start is None else start + 100 * (start < 0)
    stop = 100 if stop is None else stop + 100 * (stop < 0)
    return start, stop, ('%', part.rounding)
  if part.unit == 'abs' and (start or 0) >= 0 and (stop or 0) >= 0:
    return start or 0, math.inf if stop is None else stop, ('abs', None)
  return None


def _part_overlap(a, b, sizes) -> str:
  """Where two slices of one split overlap, e.g. 'train[0%:10%]'; '' if not.

  In the slices' own unit where they share one; else in examples, from
  ``sizes``; '' when neither can tell.
  """
  name, ra, rb = a.split_name, _relative(a), _relative(b)
  if ra and rb and (None in (ra[2], rb[2]) or ra[2] == rb[2]):
    lo, hi = max(ra[0], rb[0]), min(ra[1], rb[1])
    unit = ra[2] or rb[2]
    if hi <= lo:
      return ''
    if unit is None:
      return name
    mark = '%' if unit[0] == '%' else ''
    return (f'{name}[{lo:g}{mark}:{hi:g}{mark}]' if hi != math.inf
            else f'{name}[{lo:g}{mark}:]')
  if not sizes or name not in sizes:
    return ''
  info = {name: types.SimpleNamespace(num_examples=sizes[name],
                                      shard_lengths=[sizes[name]])}
  (xa,), (xb,) = a.to_absolute(info), b.to_absolute(info)
  end = lambda x: sizes[name] if x.to is None else x.to
  lo, hi = max(xa.from_ or 0, xb.from_ or 0), min(end(xa), end(xb))
  return f'{name}[{lo}:{hi}] ({hi - lo} examples)' if hi > lo else ''


def split_overlap(train: str, evaluated: str,
                  sizes: dict[str, int] | None = None) -> str:
  """Where split string ``evaluated`` takes examples of ``train``.

  E.g. ``'train[0%:10%]'`` for ``train[:90%]`` and ``train[:10%]``; '' when
  they are disjoint (``train[90%:]``) or when it cannot be told: a string
  tfds cannot parse, or slices in different units (percent, indices,
  shards) of a split whose size ``sizes`` (split name -> examples) lacks.
  Folder and digits splits slice one fixed shuffle, so the same holds there.
  """
  try:
    found = [_part_overlap(a, b, sizes) for a in _parts(train)
             for b in _parts(evaluated) if a.split_name == b.split_name]
  except Exception:  # pylint: disable=broad-except
    return ''  # undecidable: say nothing rather than guess
  return ', '.join(dict.fromkeys(f for f in found if f))


def split_sizes(spec: DataSpec, *splits: str) -> dict[str, int] | None:
  """Examples in each split that split strings ``splits`` name, if cheap.

  TFDS's from its metadata; the digits' and a folder's from their decoded
  arrays, which training and evaluation have already loaded (cached). None
  when unknown (e.g. mocked TFDS data).
  """
  c = spec.source
  try:
    names = {p.split_name for s in splits for p in _parts(s)}
    if c.kind == 'tfds':
      infos = tfds_source.builder(c.arg, c.data_dir,
                                  tfds_source.mocked()).info.splits
      sizes = {k: v.num_examples for k, v in infos.items()}
    elif c.kind == 'digits':
      sizes = {'train': len(_digits_split(c.size, c.channels)[1])}
    else:
      classes = class_names(c, spec.train_split)
      sizes = {n: len(_folder_split(c.arg, n, classes, c.size,
                                    c.channels)[1])
               for n in names if n in _folder_splits(c.arg)}
  except Exception:  # pylint: disable=broad-except
    return None
  return {k: v for k, v in sizes.items() if k in names and v} or None


def example_count(spec: DataSpec, split: str) -> int | None:
  """Examples in ``split`` without decoding an image; None when unknown.

  A folder's are its files (unreadable ones included, which training
  skips); TFDS's and the digits' as ``split_sizes``.
  """
  c = spec.source
  try:
    if c.kind == 'folder':
      sizes = {n: sum(len(_entries(os.path.join(c.arg, n, k), 'file'))
                      for k in _folder_classes(c.arg, n))
               for n in _names(split, _folder_splits(c.arg))}
    else:
      sizes = split_sizes(spec, split)
    return sum(b - a for _, a, b in _resolve(split, sizes)) if sizes else None
  except Exception:  # pylint: disable=broad-except
    return None


# ---------------------------------------------------------- folder, digits


def _entries(path: str, kind: str) -> list[str]:
  """Sorted names of ``path``'s visible directories or files (``kind``).

  An entry that cannot be followed (a symlink loop, a dangling link, no
  permission) is neither, and is left out with the unreadable files.
  """
  def is_kind(entry):
    try:
      return entry.is_dir() if kind == 'dir' else entry.is_file()
    except OSError:
      return False
  try:
    entries = list(os.scandir(path))
  except OSError as e:
    raise UserError(f'cannot list {path} ({e.strerror}); check the image '
                    'folder') from None
  return sorted(e.name for e in entries
                if not e.name.startswith('.') and is_kind(e))


def _subdirs(path: str) -> list[str]:
  return _entries(path, 'dir')


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
    found = _entries(d, 'file')
    if not found:
      raise UserError(f'class folder {d} holds no files; add its images or '
                      'remove the folder (an empty class would be a class '
                      'with no examples)')
    files += [os.path.join(d, f) for f in found]
    labels += [classes.index(name)] * len(found)
  images, ok = transforms.decode_files(np.array(files, dtype=object), size,
                                       channels)
  if not ok.all():
    bad = [files[i] for i in np.flatnonzero(~ok)]
    logging.warning('Skipped %d unreadable or non-image files under %s/%s, '
                    'e.g. %s', len(bad), root, split, ', '.join(bad[:5]))
  if not ok.any():
    raise UserError(f'no readable images under {root}/{split}; expected '
                    f'{root}/{split}/<class>/<image> JPEG/PNG/GIF/BMP files')
  return _shuffled(images[ok], np.asarray(labels, np.int32)[ok])


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's 1,797 8x8 digits (levels 0-16) and their labels.

  Read from the CSV file scikit-learn ships, as its ``load_digits`` does,
  without importing scikit-learn: that import costs seconds per process,
  which every small run on the digits paid.
  """
  spec = importlib.util.find_spec('sklearn')
  csv = os.path.join(*(spec.submodule_search_locations or ['']), 'datasets',
                     'data', 'digits.csv.gz') if spec else ''
  if not os.path.isfile(csv):  # another layout: let scikit-learn find it
    from sklearn import datasets  # pylint: disable=g-import-not-at-top
    digits = datasets.load_digits()
    return digits.images, digits.target
  table = np.loadtxt(csv, delimiter=',')
  return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)


@functools.lru_cache(maxsize=2)
def _digits_split(size, channels):
  pixels, target = _load_digits()
  images = np.round(pixels * (255 / 16)).astype(np.uint8)[..., None]
  # numpy, not TensorFlow: the same pixels whether or not TF is installed,
  # and no TF import (seconds) for a small in-memory dataset.
  images = transforms.conform_array(images, size, channels)
  return _shuffled(images, target.astype(np.int32))


# ------------------------------------------------------------ loading


@functools.lru_cache(maxsize=8)
def load_memory(key) -> tuple[np.ndarray, np.ndarray]:
  """Loads one split of an in-memory source as read-only arrays."""
  c, spec, classes, mocked = key
  if c.kind == 'digits':
    images, labels = _slice(spec, ['train'],
                            lambda _: _digits_split(c.size, c.channels))
  elif c.kind == 'folder':
    images, labels = _slice(spec, _folder_splits(c.arg), lambda s: (
        _folder_split(c.arg, s, classes, c.size, c.channels)))
  else:
    ds = tfds_source.builder(c.arg, c.data_dir, mocked).as_dataset(
        split=spec, as_supervised=True, shuffle_files=False)
    images, labels = transforms.conform_dataset(ds, c.size, c.channels)
  images.flags.writeable = labels.flags.writeable = False  # Shared by cache.
  return images, labels


def class_names(source: Source, train_split: str) -> tuple[str, ...]:
  """The label names, indexed by label."""
  if source.kind == 'digits':
    return tuple(str(i) for i in range(10))
  if source.kind == 'folder':
    splits = _names(train_split, _folder_splits(source.arg))
    return tuple(sorted({n for s in splits
                         for n in _folder_classes(source.arg, s)}))
  return tfds_source.class_names(
      tfds_source.builder(source.arg, source.data_dir, tfds_source.mocked()))


def open_split(spec: DataSpec, split: str) -> Split:
  """Locates a split; in-memory ones are loaded (once) by load_memory(key)."""
  c, mocked = spec.source, tfds_source.mocked()
  if c.kind == 'tfds':
    builder = tfds_source.builder(c.arg, c.data_dir, mocked)
    sizes = {k: v.num_examples for k, v in builder.info.splits.items()}
    # Mocked data knows no split sizes (and tfds then accepts any name).
    n = sum(b - a for _, a, b in _resolve(split, sizes or None))
    image_key = builder.info.supervised_keys[0]
    if (None in builder.info.features[image_key].shape
        or n * c.size**2 * c.channels > _MAX_IN_MEMORY_BYTES):
      n = n or int(builder.as_dataset(split=split).cardinality())
      return Split(n, split, builder=builder)
  classes = (class_names(c, spec.train_split) if c.kind == 'folder'
             else None)
  key = (c, split, classes, mocked)
  return Split(len(load_memory(key)[1]), split, key=key)


def clear_caches():
  """Drops every cached array and builder (e.g. between tests)."""
  for fn in (tfds_source.builder, load_memory, _folder_split, _digits_split):
    fn.cache_clear()
