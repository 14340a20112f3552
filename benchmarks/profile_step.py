"""Where a training step's time goes, by op class, from a ``jax.profiler`` trace.

Builds the project's training step exactly as ``throughput.py`` does
(``experiment.setup``), runs ``--steps`` steps under ``jax.profiler.trace``,
and reads the trace (an XSpace protobuf) back: every XLA op executed is one
event. Each op is assigned a class from the ``jax.named_scope`` in its HLO
``op_name`` metadata (the library names its kernels: ``onednn_conv``, ``gemm``,
``xla_conv``,
``im2col``, ``depthwise``, ``batchnorm``, ``max_pool``, ``concat``,
``optimizer``, ``loss``); ops outside every named kernel are "other".

  python benchmarks/profile_step.py --model nin_cifar --batch_size 128
  python benchmarks/profile_step.py --model googlenet_cifar --width 0.125 \\
      --batch_size 256 [--dtype bfloat16] [--top 15]

The classes' times are the ops' own durations summed over the profiled
steps, divided by the number of steps; "wall" is the measured step time.
"""
import argparse
import collections
import glob
import os
import re
import tempfile
import time

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import numpy as np

from benchmarks import throughput
from inception import data
from inception.training import experiment, specs

# Checked in this order: a backward GEMM inside BatchNorm's scope cannot
# happen, but an im2col GEMM sits inside both 'im2col' and 'gemm' scopes.
CLASSES = ('onednn_conv', 'gemm', 'xla_conv', 'depthwise', 'batchnorm', 'max_pool', 'im2col',
           'concat', 'optimizer', 'loss')
_NAME = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_CALLS = re.compile(r'calls=%?([\w.\-]+)')


def classify(op_name: str) -> str:
  """The op class of an HLO op_name (its named-scope path)."""
  parts = set(re.split(r'[/()]', op_name or ''))
  for c in CLASSES:
    if c in parts:
      return c
  return 'other'


def _instructions(text: str):
  """(name, op_name, called computation) for each HLO instruction line."""
  for line in text.split('\n'):
    m = _NAME.match(line)
    if m:
      op_name, calls = _OP_NAME.search(line), _CALLS.search(line)
      yield (m.group(1), op_name.group(1) if op_name else '',
             calls.group(1) if calls else None)


def op_names(hlo_text: str) -> dict[str, str]:
  """HLO instruction name -> op_name; a fusion takes its heaviest op's name.

  A fusion's own metadata is that of one of its ops; the op_names inside its
  computation are ranked by ``CLASSES`` order, so that a fused GEMM or
  convolution decides the class rather than the elementwise op around it.
  """
  bodies, current = {}, None
  for line in hlo_text.split('\n'):
    if line and not line[0].isspace():
      m = re.match(r'(?:ENTRY\s+)?%?([\w.\-]+)\s', line)
      current = m.group(1) if m else None
      bodies[current] = []
    elif current is not None:
      bodies[current].append(line)
  rank = lambda n: (CLASSES + ('other',)).index(classify(n))
  names = {}
  for name, op_name, calls in _instructions(hlo_text):
    inner = [n for _, n, _ in _instructions('\n'.join(bodies.get(calls, [])))
             if n]
    names[name] = min(inner, key=rank) if inner else op_name
  return names


def read_trace(logdir: str) -> dict[str, list[float]]:
  """Op name -> durations (ms) of every XLA op event in the trace."""
  from tensorflow.tsl.profiler.protobuf import xplane_pb2
  (path,) = glob.glob(os.path.join(logdir, '**', '*.xplane.pb'),
                      recursive=True)
  space = xplane_pb2.XSpace()
  with open(path, 'rb') as f:
    space.ParseFromString(f.read())
  events = collections.defaultdict(list)
  for plane in space.planes:
    names = {k: v.name for k, v in plane.event_metadata.items()}
    for line in plane.lines:
      for e in line.events:
        events[names.get(e.metadata_id, '')].append(e.duration_ps / 1e9)
  return events


def profile(args) -> dict:
  """Times ``args.steps`` profiled training steps; returns ms per op class."""
  config = throughput.load_config(args)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (config.batch_size, 32, 32, 3), np.uint8)
  labels = rng.integers(0, 10, config.batch_size).astype(np.int32)
  exp = experiment.setup(specs.read(config))
  state = exp.init_state()
  batch = data.global_batch({'image': images, 'label': labels},
                                exp.batch_sharding)
  step = exp.train_step.lower(state, batch, exp.dropout_rng).compile()
  names = op_names(step.as_text())
  for _ in range(2):  # warm up
    state, metrics = step(state, batch, exp.dropout_rng)
  jax.block_until_ready((state, metrics))
  times = []
  with tempfile.TemporaryDirectory() as logdir:
    with jax.profiler.trace(logdir):
      for _ in range(args.steps):
        start = time.perf_counter()
        state, metrics = step(state, batch, exp.dropout_rng)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - start)
    events = read_trace(logdir)
  per_class, per_op = collections.Counter(), collections.Counter()
  for name, durations in events.items():
    if name in names:
      per_class[classify(names[name])] += sum(durations) / args.steps
      per_op[name] += sum(durations) / args.steps
  return {'wall_ms': 1e3 * float(np.median(times)), 'classes': per_class,
          'ops': per_op, 'names': names}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='nin_cifar',
                      choices=sorted(throughput.CONFIGS))
  parser.add_argument('--batch_size', type=int, default=None)
  parser.add_argument('--width', type=float, default=None)
  parser.add_argument('--bottleneck', type=throughput.parse_bool, default=True)
  parser.add_argument('--pool_proj', type=throughput.parse_bool, default=None)
  parser.add_argument('--separable', type=throughput.parse_bool,
                      default=False)
  parser.add_argument('--dtype', default='float32')
  parser.add_argument('--conv_impl', default='auto')
  parser.add_argument('--activation_dtype', default='',
                      choices=('', 'auto', 'float32', 'bfloat16'))
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--top', type=int, default=10)
  args = parser.parse_args()
  result = profile(args)
  ops_total = sum(result['classes'].values())
  print(f'{args.model} width {args.width} batch {args.batch_size} '
        f'{args.dtype}: step {result["wall_ms"]:.1f} ms wall, '
        f'{ops_total:.1f} ms in XLA ops (median/mean of {args.steps})\n')
  print('| op class | ms / step | share of op time |')
  print('|---|---|---|')
  for c, ms in result['classes'].most_common():
    print(f'| {c} | {ms:.1f} | {100 * ms / ops_total:.1f}% |')
  print(f'\nTop {args.top} ops:\n')
  print('| op | class | ms / step |')
  print('|---|---|---|')
  for name, ms in result['ops'].most_common(args.top):
    print(f'| {name} | {classify(result["names"][name])} | {ms:.1f} |')


if __name__ == '__main__':
  main()
