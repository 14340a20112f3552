"""1x1 convolution speed: our GEMM ``Conv1x1`` against ``flax.linen.Conv``.

Times forward + backward (gradients w.r.t. input and kernel) of one 1x1 layer
at NiN / GoogLeNet-CIFAR shapes, both implementations side by side in one run
and interleaved, and prints the median times and their ratio.

  python benchmarks/conv1x1.py [--batch 128] [--repeats 20] [--json]
"""
import argparse
import json
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception.models.layers import Conv1x1

# (name, H=W, Cin, Cout): NiN cccp1/cccp3 and GoogLeNet-CIFAR 3a / 4e reductions.
SHAPES = [('nin cccp1', 32, 192, 160), ('nin cccp3', 16, 192, 192),
          ('3a 3x3 reduce', 32, 192, 96), ('4e 1x1', 16, 528, 256)]


def _step(module, x):
  params = module.init(jax.random.key(0), x[:1])

  @jax.jit
  def step(params, x):
    loss = lambda p, x: jnp.mean(module.apply(p, x) ** 2)
    return jax.grad(loss, argnums=(0, 1))(params, x)

  return lambda: jax.block_until_ready(step(params, x))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--repeats', type=int, default=20)
  parser.add_argument('--json', action='store_true')
  args = parser.parse_args()
  rows = []
  for name, hw, cin, cout in SHAPES:
    x = jax.random.normal(jax.random.key(1), (args.batch, hw, hw, cin))
    fns = {'gemm': _step(Conv1x1(cout), x),
           'nn.Conv': _step(nn.Conv(cout, (1, 1)), x)}
    times = {k: [] for k in fns}
    for f in fns.values():
      f()  # compile and warm up
    for _ in range(args.repeats):
      for k, f in fns.items():
        t = time.perf_counter()
        f()
        times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    gflop = 3 * 2 * args.batch * hw * hw * cin * cout / 1e9  # fwd + 2 bwd GEMMs
    rows.append({'layer': name, 'shape': f'{args.batch}x{hw}x{hw}x{cin}->{cout}',
                 'gemm_ms': 1e3 * med['gemm'], 'conv_ms': 1e3 * med['nn.Conv'],
                 'speedup': med['nn.Conv'] / med['gemm'],
                 'gemm_gflops': gflop / med['gemm']})
  if args.json:
    print(json.dumps({'device': str(jax.devices()[0]), 'rows': rows}))
    return
  print(f'device: {jax.devices()[0]}, batch {args.batch}, fwd+bwd, median of'
        f' {args.repeats}\n')
  print('| layer | shape | Conv1x1 (GEMM) ms | nn.Conv ms | speed-up | GEMM GFLOP/s |')
  print('|---|---|---|---|---|---|')
  for r in rows:
    print(f"| {r['layer']} | {r['shape']} | {r['gemm_ms']:.1f} |"
          f" {r['conv_ms']:.1f} | {r['speedup']:.2f}x | {r['gemm_gflops']:.0f} |")


if __name__ == '__main__':
  main()
