"""Per-layer speed of the conv_impl kernels: XLA conv, im2col GEMM, oneDNN.

Times forward + backward (input and weight gradients) of single kxk
convolutions, depthwise kxk convolutions (XLA's grouped convolution vs a sum
of shifted products; no oneDNN kernel) and 3x3 max pools at the shapes NiN and GoogLeNet-CIFAR
(and its ``separable`` variant) use,
both implementations interleaved in one run, and prints the median times and
the ratio. ``xla_cpu.im2col_pays`` (what ``conv_impl='auto'`` picks on CPU
without oneDNN) is set from these figures; convolutions and pools also time
``'onednn'`` where its kernels are built (``inception.kernels.onednn``).

  python benchmarks/conv_impl.py [--batch 128] [--repeats 10] [--json] \
      [--layers 'g/8,nin']   # only rows whose label contains one of these
"""
import argparse
import json

import jax
import jax.numpy as jnp

from benchmarks.timing import grad_timer, race
from inception.kernels import backend, onednn, xla_cpu

# (label, H=W, k, Cin, Cout, stride)
CONVS = [
    ('nin conv1 5x5', 32, 5, 3, 192, 1), ('nin conv2 5x5', 16, 5, 96, 192, 1),
    ('nin conv3 3x3', 8, 3, 192, 192, 1),
    ('g/8 3a 3x3', 32, 3, 12, 16, 1), ('g/8 3b 3x3', 32, 3, 16, 24, 1),
    ('g/8 4c 3x3', 16, 3, 16, 32, 1),
    ('g/4 stem 3x3', 32, 3, 3, 48, 1), ('g/4 3a 3x3', 32, 3, 24, 32, 1),
    ('g/4 3a 5x5', 32, 5, 4, 8, 1), ('g/4 4e 3x3', 16, 3, 40, 80, 1),
    ('g/4 5b 3x3', 8, 3, 48, 96, 1), ('g/1 3a 3x3', 32, 3, 96, 128, 1),
    ('g/1 3b 5x5', 32, 5, 32, 96, 1), ('g/1 4e 3x3', 16, 3, 160, 320, 1),
    ('g/1 5b 3x3', 8, 3, 192, 384, 1),
    ('naive g/4 3b 3x3', 32, 3, 64, 48, 1), ('naive g/4 4e 5x5', 16, 5, 164, 32, 1),
]
# Depthwise layers of the separable GoogLeNet-CIFAR: (label, H=W, k, C).
DEPTHWISE = [('sep g/8 3a 3x3', 32, 3, 12), ('sep g/8 3a 5x5', 32, 5, 2),
             ('sep g/8 4e 3x3', 16, 3, 20), ('sep g/1 3a 3x3', 32, 3, 96),
             ('sep g/1 4e 5x5', 16, 5, 32), ('sep g/1 5b 3x3', 8, 3, 192)]
POOLS = [('pool 3x3/1 32x32x64', 32, 64, 1), ('pool 3x3/2 32x32x120', 32, 120, 2),
         ('pool 3x3/1 16x16x128', 16, 128, 1)]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--repeats', type=int, default=10)
  parser.add_argument('--json', action='store_true')
  parser.add_argument('--layers', default='',
                      help='comma-separated label substrings (default: all)')
  args = parser.parse_args()
  wanted = [w for w in args.layers.split(',') if w]
  keep = lambda label: not wanted or any(w in label for w in wanted)
  rows = []
  key = jax.random.key(0)
  conv_impls = ('xla', 'gemm') + (('onednn',) if onednn.available() else ())
  kernels = {impl: backend.resolve(impl) for impl in conv_impls + ('auto',)}
  for label, hw, k, cin, cout, s in filter(lambda r: keep(r[0]), CONVS):
    x = jax.random.normal(key, (args.batch, hw, hw, cin))
    w = jax.random.normal(key, (k, k, cin, cout)) * 0.1
    pad = ((k // 2, k // 2),) * 2
    med = race({impl: grad_timer(lambda x, w, impl=impl: kernels[impl].conv2d(
        x, w, s, pad), x, w) for impl in conv_impls}, args.repeats)
    auto = ('onednn' if kernels['auto'].onednn else
            'gemm' if xla_cpu.im2col_pays(x.shape, w.shape) else 'xla')
    rows.append({'layer': label, 'kkcin': k * k * cin, 'xla_ms': 1e3 * med['xla'],
                 'gemm_ms': 1e3 * med['gemm'],
                 'onednn_ms': 1e3 * med['onednn'] if 'onednn' in med else None,
                 'auto': auto})
  for label, hw, k, c in filter(lambda r: keep(r[0]), DEPTHWISE):
    x = jax.random.normal(key, (args.batch, hw, hw, c))
    w = jax.random.normal(key, (k, k, 1, c)) * 0.1
    pad = ((k // 2, k // 2),) * 2
    med = race({impl: grad_timer(lambda x, w, impl=impl: kernels[impl].depthwise(
        x, w, 1, pad), x, w) for impl in ('xla', 'gemm')}, args.repeats)
    rows.append({'layer': label, 'kkcin': k * k, 'xla_ms': 1e3 * med['xla'],
                 'gemm_ms': 1e3 * med['gemm'], 'auto': 'gemm (shifted)'})
  for label, hw, c, s in filter(lambda r: keep(r[0]), POOLS):
    x = jax.random.normal(key, (args.batch, hw, hw, c))
    med = race({impl: grad_timer(lambda x, impl=impl: kernels[impl].max_pool(
        x, 3, s, 'SAME'), x) for impl in conv_impls}, args.repeats)
    rows.append({'layer': label, 'kkcin': None, 'xla_ms': 1e3 * med['xla'],
                 'gemm_ms': 1e3 * med['gemm'],
                 'onednn_ms': 1e3 * med['onednn'] if 'onednn' in med else None,
                 'auto': 'onednn' if kernels['auto'].onednn else 'gemm'})
  if args.json:
    print(json.dumps({'device': str(jax.devices()[0]), 'batch': args.batch,
                      'rows': rows}))
    return
  print(f'batch {args.batch}, forward + backward, median of {args.repeats}\n')
  print('| layer | k*k*Cin | xla ms | gemm ms | onednn ms | xla/gemm |'
        ' xla/onednn | auto picks |')
  print('|---|---|---|---|---|---|---|---|')
  for r in rows:
    one = r.get('onednn_ms')
    one_ms, vs_one = (f'{one:.1f}', f"{r['xla_ms'] / one:.2f}x") if one else (
        '', '')
    print(f"| {r['layer']} | {r['kkcin'] or ''} | {r['xla_ms']:.1f} |"
          f" {r['gemm_ms']:.1f} | {one_ms} | {r['xla_ms'] / r['gemm_ms']:.2f}x"
          f" | {vs_one} | {r['auto']} |")


if __name__ == '__main__':
  main()
