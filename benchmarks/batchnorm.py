"""Per-layer speed of training-mode BatchNorm + ReLU: XLA vs oneDNN, f32 vs bf16.

Times forward + backward of BatchNorm (batch statistics) followed by a ReLU
at the shapes of GoogLeNet-CIFAR's layers: the library's XLA version
(``inception.kernels.batchnorm.batch_norm_train``, then ``nn.relu``) and oneDNN's
kernel with the ReLU fused (``inception.kernels.onednn.batch_norm``), each on float32
and bfloat16 activations, all four interleaved in one run. The "vector"
column says whether oneDNN has a JIT kernel for the shape
(``onednn.batch_norm_vectorized``); where it has none, ``BatchNorm`` keeps
XLA's. These figures are why bf16 activations pay on oneDNN and not on XLA
(``inception.kernels.backend.activation_dtype``).

  python benchmarks/batchnorm.py [--repeats 20] [--layers 'g/1 stem,g/8 stem'] [--json]
"""
import argparse
import json

import flax.linen as nn
import jax
import jax.numpy as jnp

from benchmarks.timing import race
from inception.kernels import onednn
from inception.kernels.batchnorm import batch_norm_train

# (label, batch, H=W, C): full width at batch 32, width 1/8 (the CPU config)
# at batch 256.
LAYERS = [('g/1 stem', 32, 32, 192), ('g/1 3a 3x3', 32, 32, 128),
          ('g/1 4e 3x3', 32, 16, 320), ('g/1 5b 1x1', 32, 8, 384),
          ('g/8 stem', 256, 32, 24), ('g/8 3a 3x3', 256, 32, 16),
          ('g/8 4e 3x3', 256, 16, 40), ('g/8 5b 1x1', 256, 8, 48)]


def _xla(x, scale, bias):
  return nn.relu(batch_norm_train(x, scale, bias, 1e-5, x.dtype)[0])


def _onednn(x, scale, bias):
  return onednn.batch_norm(x, scale, bias, 1e-5, relu=True)[0]


def _timer(fn, x, scale, bias):
  cotangent = jnp.ones_like(x)

  def step(x, scale, bias):
    y, vjp = jax.vjp(fn, x, scale, bias)
    return y, vjp(cotangent)

  step = jax.jit(step)
  jax.block_until_ready(step(x, scale, bias))
  return lambda: jax.block_until_ready(step(x, scale, bias))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=20)
  parser.add_argument('--layers', default='',
                      help='comma-separated labels of LAYERS; default: all')
  parser.add_argument('--json', action='store_true')
  args = parser.parse_args()
  wanted = [l for l in args.layers.split(',') if l]
  unknown = set(wanted) - {layer[0] for layer in LAYERS}
  if unknown:
    parser.error(f'unknown --layers {sorted(unknown)}; known: '
                 f'{[layer[0] for layer in LAYERS]}')
  impls = {'xla': _xla}
  if onednn.available():
    impls['onednn'] = _onednn
  rows = []
  for label, n, hw, c in LAYERS:
    if wanted and label not in wanted:
      continue
    fns, vector = {}, {}
    for dtype in (jnp.float32, jnp.bfloat16):
      x = jax.random.normal(jax.random.key(0), (n, hw, hw, c)).astype(dtype)
      scale, bias = jnp.ones((c,)), jnp.zeros((c,))
      name = jnp.dtype(dtype).name
      vector[name] = onednn.available() and onednn.batch_norm_vectorized(
          x.shape, dtype, 1e-5, relu=True)
      for impl, fn in impls.items():
        if impl == 'onednn' and name == 'bfloat16' and not onednn.supports_bf16():
          continue  # oneDNN refuses bf16 on this CPU (no AVX-512)
        fns[f'{impl} {name}'] = _timer(fn, x, scale, bias)
    med = race(fns, args.repeats)
    rows.append({'layer': label, 'shape': [n, hw, hw, c], 'vector': vector,
                 'ms': {k: v * 1e3 for k, v in med.items()}})
  if args.json:
    print(json.dumps(rows, indent=1))
    return
  cols = list(dict.fromkeys(c for r in rows for c in r['ms']))
  print('| layer | N,H,W,C | oneDNN vector f32/bf16 | '
        + ' | '.join(f'{c} ms' for c in cols) + ' |')
  print('|---' * (3 + len(cols)) + '|')
  for r in rows:
    v = '/'.join('yes' if r['vector'][d] else 'no'
                 for d in ('float32', 'bfloat16'))
    print(f"| {r['layer']} | {','.join(map(str, r['shape']))} | {v} | "
          + ' | '.join(f"{r['ms'][c]:.2f}" if c in r['ms'] else '-'
                       for c in cols) + ' |')


if __name__ == '__main__':
  main()
