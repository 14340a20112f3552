"""Time of the FLOP accounting, with and without tracing flax's initializers.

``flops.analyze`` makes every parameter a zero of its shape while it runs, so
no initializer's random draw is traced; bisections (``budget``), reports and
sweep plans call it hundreds of times. This times ``analyze`` on a network at
``--widths`` fresh widths, both ways in turn, ``--rounds`` times, in one
process (each width traced once, so no trace cache helps either side):

  python -m benchmarks.accounting_time [--model googlenet_cifar] \
      [--naive] [--widths 4] [--rounds 3] [--json]
"""
import argparse
import contextlib
import json
import statistics
import time

from inception import models, provenance
from inception.models import flops


def seconds(model_name: str, options: dict, widths: list[float],
            zero_init: bool) -> float:
  """Seconds to analyze the model at each width (inference MACs only)."""
  saved = flops._zero_initializers  # pylint: disable=protected-access
  if not zero_init:
    flops._zero_initializers = contextlib.nullcontext  # pylint: disable=protected-access
  try:
    start = time.perf_counter()
    for width in widths:
      flops.analyze(models.get_model(model_name, **options, width=width),
                    models.MODELS[model_name].input_shape, xla=False,
                    trace_training=False)
    return time.perf_counter() - start
  finally:
    flops._zero_initializers = saved  # pylint: disable=protected-access


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='googlenet_cifar')
  parser.add_argument('--naive', action='store_true',
                      help='the naive variant (no 1x1 reductions)')
  parser.add_argument('--widths', type=int, default=4)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--json', action='store_true')
  args = parser.parse_args()
  options = ({k: False for k in flops.naive_overrides(args.model)}
             if args.naive else {})
  fresh = iter(0.25 + 0.001 * i for i in range(10**6))
  times = {'flax initializers': [], 'zeros': []}
  for _ in range(args.rounds):
    for name, zero_init in (('flax initializers', False), ('zeros', True)):
      widths = [next(fresh) for _ in range(args.widths)]
      times[name].append(seconds(args.model, options, widths, zero_init))
  median = {k: statistics.median(v) / args.widths for k, v in times.items()}
  result = {'model': args.model, 'options': options, 'cpu':
            provenance.cpu_model(), 'seconds_per_analyze': median,
            'ratio': median['flax initializers'] / median['zeros']}
  if args.json:
    print(json.dumps(result))
  else:
    for name, s in median.items():
      print(f'{args.model} {options or ""}: {s:.3f} s per analyze with {name}')
    print(f'ratio {result["ratio"]:.2f}x ({result["cpu"]})')


if __name__ == '__main__':
  main()
