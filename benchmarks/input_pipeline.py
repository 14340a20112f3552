"""Input-pipeline throughput on the real CIFAR-10 JPEG folder.

Measures the images/s that two pipelines deliver, with CIFAR augmentation
(pad-4 crop + flip), batch 256, as the training loop consumes them:
  * ``folder:`` (inception.data.loader): JPEGs decoded once into memory, then
    numpy augmentation in a Grain dataset indexed by step, prefetched on
    2 threads;
  * TFDS streaming (inception.data.pipeline.stream_train_batches) over the same
    folder through ``tfds.ImageFolder``: decode + augment per step in tf.data.

  mkdir -p /tmp/cifar10 && tar xzf ../shared/data/cifar10-jpeg-train.tar.gz -C /tmp/cifar10
  python benchmarks/input_pipeline.py --root /tmp/cifar10 [--steps 100] [--json]
"""
import argparse
import json
import time

import ml_collections

from inception import data
from inception.data import pipeline, tf_quiet
import tensorflow_datasets as tfds  # pylint: disable=g-bad-import-order


def _rate(batches, steps: int, batch: int) -> float:
  next(batches)  # first batch: start-up, not throughput
  t = time.perf_counter()
  for _ in range(steps):
    next(batches)
  return steps * batch / (time.perf_counter() - t)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--root', default='/tmp/cifar10')
  parser.add_argument('--steps', type=int, default=100)
  parser.add_argument('--batch_size', type=int, default=256)
  parser.add_argument('--json', action='store_true')
  args = parser.parse_args()
  config = ml_collections.ConfigDict(dict(
      dataset=f'folder:{args.root}', data_dir='', train_split='train[:90%]',
      eval_split='train[90%:]', image_size=32, channels=3, augment='cifar',
      batch_size=args.batch_size, seed=0))
  t = time.perf_counter()
  spec = data.parse(config)
  info = data.get_info(spec)
  load_s = time.perf_counter() - t
  folder = _rate(data.train_batches(spec), args.steps, args.batch_size)
  tf_quiet.load()  # before tfds imports TF itself
  builder = tfds.ImageFolder(args.root)
  n = builder.info.splits['train'].num_examples
  stream = pipeline.stream_train_batches(
      builder, 'train', n, 'cifar', 32, 3, args.batch_size, 0, 0, 0, 1)
  tfds_rate = _rate(stream, args.steps, args.batch_size)
  result = {'examples': info.num_train_examples, 'folder_load_s': load_s,
            'folder_images_per_s': folder, 'tfds_stream_images_per_s': tfds_rate,
            'batch_size': args.batch_size, 'steps': args.steps}
  if args.json:
    print(json.dumps(result))
    return
  print(f"folder: loaded and decoded {info.num_train_examples:,} train images"
        f" in {load_s:.1f} s")
  print('| pipeline | images/s (cifar augmentation) |\n|---|---|')
  print(f'| folder: (in memory) | {folder:,.0f} |')
  print(f'| TFDS streaming (ImageFolder, decode per step) | {tfds_rate:,.0f} |')


if __name__ == '__main__':
  main()
