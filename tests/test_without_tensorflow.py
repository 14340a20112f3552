"""JAX-only GPU images have no TensorFlow: training and evaluation run without it.

TensorFlow serves the tf.data pipeline (TFDS streams) here. In
memory (digits, image folders) every step has a TF-free path: Pillow decodes,
``jax.image.resize`` conforms, tensorboardX writes the events.
"""
import json
import os
import sysconfig

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, cli_overrides, run_cli
from inception.data import tf_quiet, transforms



def site_without_tensorflow(folder) -> str:
  """A copy of this environment's site-packages (links) without TensorFlow.

  A worker started with ``python -S`` and this folder on PYTHONPATH sees
  TensorFlow as not installed, to ``import`` and to ``find_spec`` alike, as
  tensorflow_datasets and etils probe it.
  """
  purelib = sysconfig.get_paths()['purelib']
  os.makedirs(folder)
  for entry in os.listdir(purelib):
    if entry == 'tensorflow' or entry.startswith(('tensorflow-',
                                                  'tensorflow_cpu')):
      continue
    os.symlink(os.path.join(purelib, entry), os.path.join(folder, entry))
  return str(folder)


def test_conform_without_tensorflow_matches_tensorflow_within_one_level(
    monkeypatch):
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = np.round(datasets.load_digits().images[:100] * (255 / 16))
  digits = digits.astype(np.uint8)[..., None]
  photo = np.random.default_rng(0).integers(0, 256, (4, 40, 50, 3), np.uint8)
  cases = [(digits, 32, 1, 1.0), (digits, 32, 3, 1.0), (digits, 28, 1, 0.875),
           (photo, 32, 3, 1.0), (photo, 32, 1, 0.875), (photo[:, :32, :32], 32,
                                                        3, 1.0)]
  with_tf = [np.asarray(transforms.conform(*c)) for c in cases]
  monkeypatch.setattr(tf_quiet, 'available', lambda: False)
  for (images, size, channels, _), ours, theirs in zip(
      cases, (transforms.conform(*c) for c in cases), with_tf):
    assert isinstance(ours, np.ndarray) and ours.dtype == np.uint8
    assert ours.shape == theirs.shape == images.shape[:1] + (size, size,
                                                             channels)
    assert np.abs(ours.astype(int) - theirs).max() <= 1
    assert (ours != theirs).mean() < 0.01


@pytest.mark.parametrize('source', ['digits', 'folder'])
def test_training_runs_without_tensorflow(tmp_path, source):
  """The digits upscaled (``conform_array``, as the device check does) or an
  image folder (Pillow decodes): the loop trains, evaluates and logs."""
  overrides = dict(image_size=16, batch_size=8, eval_every_epochs=1.0)
  if source == 'folder':
    root = tmp_path / 'images'
    rng = np.random.default_rng(0)
    for c in range(3):
      os.makedirs(root / 'train' / f'class{c}')
      for i in range(12):
        pixels = rng.integers(0, 256, (12, 10, 3), np.uint8)  # resized
        Image.fromarray(pixels).save(root / 'train' / f'class{c}' / f'{i}.png')
    overrides.update(dataset=f'folder:{root}', channels=3,
                     train_split='train[:75%]', eval_split='train[75%:]',
                     **{'model.num_classes': 3})
  env = {'PYTHONPATH': os.pathsep.join(
      [site_without_tensorflow(tmp_path / 'site'), REPO])}
  blocked = run_cli('-S', '-c', 'import tensorflow', env=env)
  assert 'ModuleNotFoundError' in blocked.stderr, blocked.stderr[-2000:]
  workdir = tmp_path / 'run'
  result = run_cli('-S', '-m', 'inception.cli.train',
                   '--config', 'tests/tiny_config.py', '--workdir',
                   str(workdir), *cli_overrides(**overrides), env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((workdir / 'summary.json').read_text())
  assert 0.0 <= summary['final_eval_accuracy'] <= 1.0
  records = [json.loads(line) for line in
             (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert any('train/loss' in r for r in records)
  assert any('eval/accuracy' in r for r in records)
