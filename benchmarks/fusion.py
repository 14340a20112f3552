"""Horizontal fusion of an Inception block's parallel 1x1 layers, block by block.

Times one training pass (forward, then gradients of every parameter and of
the input) of each GoogLeNet-CIFAR Inception block with ``fuse=False`` (one
GEMM per 1x1 layer) and ``fuse=True`` (``#1x1`` and both reduces as one GEMM
over the concatenated kernels), the two jitted steps run in turn, median of
``--repeats``. The block's input has the shape it has in the network.

  python benchmarks/fusion.py --width 0.125 --batch 256
  python benchmarks/fusion.py --width 1.0 --batch 32 [--json]
"""
import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp

from inception import models
from inception.kernels import backend
from inception.models import layers

# GoogLeNet-CIFAR: the stem gives 192 channels at 32x32; 4a-4e run at 16x16,
# 5a-5b at 8x8 (models.GoogLeNetCIFAR).
SIZES = {'3a': 32, '3b': 32, '4a': 16, '4b': 16, '4c': 16, '4d': 16,
         '4e': 16, '5a': 8, '5b': 8}


def block_inputs(width: float):
  """(stage, widths, input channels) of every block at ``width``."""
  channels = layers.scale_width(192, width)
  for stage in SIZES:
    widths = models.TABLE1[stage].scaled(width)
    yield stage, widths, channels
    channels = widths.c1x1 + widths.c3x3 + widths.c5x5 + widths.pool_proj


def _step(block, x):
  variables = block.init(jax.random.key(0), x)

  def loss(params, x):
    y, _ = block.apply({**variables, 'params': params}, x, train=True,
                       mutable=['batch_stats'])
    return jnp.sum(y * y)

  grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
  jax.block_until_ready(grad(variables['params'], x))
  return lambda: jax.block_until_ready(grad(variables['params'], x))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--width', type=float, default=0.125)
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--repeats', type=int, default=10)
  parser.add_argument('--dtype', default='float32')
  parser.add_argument('--json', action='store_true')
  parser.add_argument('--blocks', default='',
                      help='comma-separated stages, e.g. 3a,4e (default: all)')
  args = parser.parse_args()
  wanted = set(filter(None, args.blocks.split(',')))
  rows = []
  for stage, widths, cin in block_inputs(args.width):
    if wanted and stage not in wanted:
      continue
    size = SIZES[stage]
    x = jax.random.normal(jax.random.key(1), (args.batch, size, size, cin))
    steps = {fuse: _step(layers.InceptionBlock(
        widths, kernels=backend.resolve('auto', args.dtype), fuse=fuse), x)
             for fuse in (False, True)}
    times = {k: [] for k in steps}
    for _ in range(args.repeats):
      for fuse, run in steps.items():
        start = time.perf_counter()
        run()
        times[fuse].append(time.perf_counter() - start)
    plain, fused = (1e3 * statistics.median(times[k]) for k in (False, True))
    rows.append({'block': stage, 'input': [size, size, cin],
                 'pointwise_widths': [widths.c1x1, widths.c3x3_reduce,
                                      widths.c5x5_reduce],
                 'separate_ms': plain, 'fused_ms': fused,
                 'speedup': plain / fused})
  if args.json:
    print(json.dumps(rows, indent=1))
    return
  print(f'width {args.width}, batch {args.batch}, {args.dtype}: '
        f'median of {args.repeats} interleaved training passes\n')
  print('| block | input | 1x1 / 3x3 reduce / 5x5 reduce | separate ms | '
        'fused ms | separate / fused |')
  print('|---|---|---|---|---|---|')
  for r in rows:
    print(f'| {r["block"]} | {"x".join(map(str, r["input"]))} | '
          f'{"/".join(map(str, r["pointwise_widths"]))} | '
          f'{r["separate_ms"]:.1f} | {r["fused_ms"]:.1f} | '
          f'{r["speedup"]:.2f}x |')
  total = (sum(r['separate_ms'] for r in rows),
           sum(r['fused_ms'] for r in rows))
  print(f'| all | | | {total[0]:.1f} | {total[1]:.1f} | '
        f'{total[0] / total[1]:.2f}x |')


if __name__ == '__main__':
  main()
