"""Compile time of a model's training forward + backward pass, by dropout layer.

``models.layers.Dropout`` draws its mask as one flat vector; flax's
``nn.Dropout`` draws it in the activation's own (4-D) shape. The masks are the
same bits; this measures what each costs XLA to compile, fresh (no
persistent cache), one after the other in one process:

  python -m benchmarks.compile_time [--model nin_cifar] [--batch 128] \
      [--dropouts flax,flat] [--json]
"""
import argparse
import json
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception import models, provenance
from inception.models import layers, networks

DROPOUTS = {'flax': nn.Dropout, 'flat': layers.Dropout}


def compile_seconds(model_name: str, batch: int) -> float:
  """Seconds XLA takes to compile the model's jitted loss gradient."""
  model = models.get_model(model_name)
  shape = models.MODELS[model_name].input_shape
  variables = models.init_variables(model, shape, jax.random.key(0))
  x = jnp.zeros((batch, *shape), jnp.float32)

  def loss(params):
    out, _ = model.apply({**variables, 'params': params}, x, train=True,
                         rngs={'dropout': jax.random.key(1)},
                         mutable=['batch_stats', 'intermediates'])
    return out.sum()

  lowered = jax.jit(jax.grad(loss)).lower(variables['params'])
  start = time.perf_counter()
  lowered.compile()
  return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='nin_cifar')
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--dropouts', default='flax,flat',
                      help=f'comma-separated, of {sorted(DROPOUTS)}')
  parser.add_argument('--json', action='store_true')
  args = parser.parse_args()
  jax.config.update('jax_compilation_cache_dir', None)  # fresh compiles
  result = {'model': args.model, 'batch': args.batch,
            'cpu': provenance.cpu_model(),
            'backend': jax.default_backend(), 'compile_s': {}}
  for name in args.dropouts.split(','):
    networks.Dropout = DROPOUTS[name]  # what the models build with
    result['compile_s'][name] = compile_seconds(args.model, args.batch)
  networks.Dropout = layers.Dropout
  if args.json:
    print(json.dumps(result))
  else:
    for name, seconds in result['compile_s'].items():
      print(f'{args.model} batch {args.batch}, {name} dropout: '
            f'{seconds:.2f} s to compile the training gradient')


if __name__ == '__main__':
  main()
