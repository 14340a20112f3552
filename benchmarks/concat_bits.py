"""A bf16 training step with XLA's channel concat against the bit-level one.

XLA:CPU widens a bf16 ``concatenate`` (and ``slice``) to float32: a
conversion pass over every operand and back. ``Kernels.concat`` and
``Kernels.split`` move the same bits as uint16 instead
(``inception.kernels.xla_cpu.concatenate``). This times the whole training
step both ways in one process, steps interleaved pair by pair, so the ratio
is side by side:

  python benchmarks/concat_bits.py --width 1.0 --batch_size 32
  python benchmarks/concat_bits.py --width 0.125 --batch_size 256
"""
import argparse
import json
import statistics
import time

import jax.numpy as jnp
import numpy as np

from benchmarks import throughput
from inception.kernels import backend
from inception.training import specs


def _xla_concat(kernels, xs):
  del kernels
  return jnp.concatenate(xs, axis=-1)


def _xla_split(kernels, y, sizes):
  del kernels
  return jnp.split(y, np.cumsum(sizes)[:-1], axis=-1)


def runners(args):
  """``{'xla concat': run, 'bit concat': run}``, each one training step."""
  config = throughput.load_config(args)
  shape = specs.model_spec(config).input_shape
  rs = np.random.default_rng(0)
  images = rs.integers(0, 256, (args.batch_size, *shape), dtype=np.uint8)
  labels = rs.integers(0, config.model.num_classes, (args.batch_size,),
                       dtype=np.int32)
  ours = backend.Kernels.concat, backend.Kernels.split
  # The step is traced (and so fixed) at its first call: patch, call, restore.
  backend.Kernels.concat, backend.Kernels.split = _xla_concat, _xla_split
  try:
    xla, _ = throughput.jax_runner(config, images, labels)
    xla()
  finally:
    backend.Kernels.concat, backend.Kernels.split = ours
  bits, _ = throughput.jax_runner(config, images, labels)
  bits()
  return {'xla concat': xla, 'bit concat': bits}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='googlenet_cifar',
                      choices=('googlenet_cifar', 'googlenet_cifar_tiny'))
  parser.add_argument('--width', type=float, default=1.0)
  parser.add_argument('--batch_size', type=int, default=32)
  parser.add_argument('--dtype', default='bfloat16')
  parser.add_argument('--pairs', type=int, default=8)
  parser.add_argument('--json', action='store_true')
  args = parser.parse_args()
  args.bottleneck, args.pool_proj, args.separable = True, None, False
  args.activation_dtype, args.conv_impl = '', 'auto'
  runs = runners(args)
  times = {name: [] for name in runs}
  for _ in range(args.pairs):
    for name, run in runs.items():
      run()  # untimed: the first step after switching programs
      start = time.perf_counter()
      run()
      times[name].append(time.perf_counter() - start)
  ratios = [a / b for a, b in zip(times['xla concat'], times['bit concat'])]
  if args.json:
    print(json.dumps({'model': args.model, 'width': args.width,
                      'batch_size': args.batch_size, 'dtype': args.dtype,
                      'cores': throughput.num_cores(),
                      'step_ms': {name: 1e3 * statistics.median(ts)
                                  for name, ts in times.items()},
                      'speedup_pairs': ratios}))
    return
  print(f'{args.model} width {args.width} batch {args.batch_size} {args.dtype},'
        f' {throughput.num_cores()} cores, {args.pairs} pairs')
  for name, ts in times.items():
    print(f'  {name}: {1e3 * statistics.median(ts):.1f} ms/step (median)')
  print(f'  bit / xla speed-up: median {statistics.median(ratios):.3f}x '
        f'(pairs {min(ratios):.3f}..{max(ratios):.3f})')


if __name__ == '__main__':
  main()
