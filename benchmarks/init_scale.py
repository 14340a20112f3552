"""NiN at initialisation: how the kernel init scales the signal, layer by layer.

The paper's NiN has no BatchNorm and a ReLU after every convolution, the
10-way classifier included, so nothing rescales the signal between its nine
layers. For each kernel init this prints, on a batch of unit-variance inputs,
every layer's output std and fraction of zeros (dead ReLUs), the logits'
spread, the loss and the global gradient norm: what decides whether the first
steps can move the network off the chance loss, log(10).

  python benchmarks/init_scale.py [--batch 32] [--no_classifier_relu] [--json]

Inits: ``he`` (variance 2/fan_in, the one ``models.layers`` uses), ``lecun``
(variance 1/fan_in, flax's ``nn.Conv`` default) and fixed Gaussians of std
0.05 and 0.01 (Caffe-style ``gaussian`` fillers).
"""
import argparse
import json
import math

import jax
import jax.numpy as jnp
import optax

from inception import models

INITS = {
    'he': lambda fan_in: math.sqrt(2.0 / fan_in),
    'lecun': lambda fan_in: math.sqrt(1.0 / fan_in),
    'gaussian0.05': lambda fan_in: 0.05,
    'gaussian0.01': lambda fan_in: 0.01,
}


def reinit(params, std_of_fan_in, key):
  """Every conv kernel redrawn from N(0, std(fan_in)^2); biases stay zero."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  out = []
  for i, (path, leaf) in enumerate(leaves):
    if getattr(path[-1], 'key', None) == 'kernel':
      fan_in = math.prod(leaf.shape[:-1])
      leaf = std_of_fan_in(fan_in) * jax.random.normal(
          jax.random.fold_in(key, i), leaf.shape, leaf.dtype)
    out.append(leaf)
  return jax.tree_util.tree_unflatten(treedef, out)


def measure(name: str, batch: int, seed: int = 0,
            classifier_relu: bool = True) -> dict:
  """Layer statistics, loss and gradient norm of NiN under one init."""
  model = models.get_model('nin_cifar', classifier_relu=classifier_relu)
  key_x, key_y, key_p = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(key_x, (batch, 32, 32, 3))
  labels = jax.random.randint(key_y, (batch,), 0, 10)
  params = reinit(model.init(key_p, x[:1])['params'], INITS[name], key_p)

  def loss_fn(p):
    logits, state = model.apply({'params': p}, x, capture_intermediates=True)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return loss.mean(), (logits, state['intermediates'])

  (loss, (logits, inter)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      params)
  rows = []
  for block in sorted(k for k in inter if k.startswith('mlpconv')):
    # conv0 (the kxk convolution), then cccp1, cccp2 (the 1x1 layers).
    for layer in sorted((k for k in inter[block] if k != '__call__'),
                        key=lambda k: (k != 'conv0', k)):
      y = inter[block][layer]['__call__'][0]
      rows.append({'layer': f'{block}/{layer}', 'std': float(y.std()),
                   'zero_fraction': float((y == 0).mean())})
  return {'init': name, 'layers': rows, 'loss': float(loss),
          'logit_std': float(logits.std(axis=-1).mean()),
          'grad_norm': float(optax.global_norm(grads))}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--inits', default=','.join(INITS))
  parser.add_argument('--no_classifier_relu', action='store_true',
                      help='drop the ReLU on the class maps')
  parser.add_argument('--json', action='store_true')
  args = parser.parse_args()
  results = [measure(n, args.batch,
                     classifier_relu=not args.no_classifier_relu)
             for n in args.inits.split(',')]
  if args.json:
    print(json.dumps(results))
    return
  layers = [r['layer'] for r in results[0]['layers']]
  print('| layer | ' + ' | '.join(
      f"{r['init']}: std / zeros" for r in results) + ' |')
  print('|---|' + '---|' * len(results))
  for i, layer in enumerate(layers):
    print(f'| {layer} | ' + ' | '.join(
        f"{r['layers'][i]['std']:.3g} / {r['layers'][i]['zero_fraction']:.0%}"
        for r in results) + ' |')
  for key in ('logit_std', 'loss', 'grad_norm'):
    print(f'| {key} | ' + ' | '.join(f'{r[key]:.4g}' for r in results) + ' |')


if __name__ == '__main__':
  main()
