"""Training-step speed of the CIFAR models: images/s, step time, MFU, memory.

Times the project's own full training step, built by ``experiment.setup``
from the experiment config in ``configs/`` exactly as training builds it
(forward, backward, SGD update; jit-compiled on the mesh with the state
donated), on a uint8 batch already on device. The embedded digits stand in
for the dataset: only the batch shape matters to the speed. Reports the median over
``--steps`` steps after ``--warmup`` steps (the first call, which compiles, is
reported separately).

MFU = model FLOPs/s / the fp32 GEMM peak measured in the same run (a jitted
``jnp.dot`` of two square float32 matrices). Model training FLOPs per image are
defined as 3 x 2 x forward MACs (``inception.models.flops.analyze``): forward, plus
backward counted as twice the forward; elementwise work is not counted.

``--torch`` also times the PyTorch twin (``benchmarks/torch_models.py``, same
weights, channels_last, SGD with the same momentum / Nesterov / weight decay)
in float32 and under ``torch.autocast('cpu', bfloat16)``, one step of each
implementation in turn so that machine noise hits every side alike. Its bf16
autocast is left out where neither ``--dtype`` asks for bf16 nor the CPU
computes bf16 natively (AVX-512 BF16 or AMX): there it is emulated, many times
slower than float32, and only costs the run's time.

  python benchmarks/throughput.py --model nin_cifar --batch_size 128 --torch
  python benchmarks/throughput.py --model googlenet_cifar --width 0.25 \\
      --batch_size 256 --bottleneck=false --dtype bfloat16 --json
  python benchmarks/throughput.py --all [--quick] [--torch] [--json]
"""
import argparse
import functools
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time

# OpenMP threads (PyTorch) spin for ~200 ms after each op by default, taking
# the cores from the JAX step that runs next in the interleaved timing.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp
import numpy as np

from inception.models import flops
from inception import data
from inception import provenance
from inception.kernels import onednn
from inception.training import build, experiment, specs

CONFIGS = {'nin_cifar': 'nin_cifar', 'nin_cifar_tiny': 'nin_cifar',
           'googlenet_cifar': 'inception_cifar',
           'googlenet_cifar_tiny': 'inception_cifar'}
# Input statistics for the torch twin; only the arithmetic matters.
MEAN, STD = (125.3, 123.0, 113.9), (63.0, 62.1, 66.7)
# --all: (model, width, batch for bottleneck, batch for naive). Full-width
# GoogLeNet batches keep a step within ~10 s on a 2-core CPU (naive: ~11x the
# MACs per image); width 0.125 is the CPU config's (inception_cifar.py:cpu).
MATRIX = [('nin_cifar', 1.0, 128, 128), ('googlenet_cifar', 1.0, 32, 8),
          ('googlenet_cifar', 0.125, 256, 256)]


def parse_bool(s):
  """argparse type for ``--flag=true|false``."""
  if s.lower() in ('1', 'true', 'yes'):
    return True
  if s.lower() in ('0', 'false', 'no'):
    return False
  raise argparse.ArgumentTypeError(f'expected true or false, got {s!r}')


def num_cores():
  """Cores this process may run on."""
  return len(os.sched_getaffinity(0))


def max_rss_mb():
  """Peak resident set size of this process so far (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_config(args):
  """The model's experiment config with the command-line overrides applied."""
  module = importlib.import_module(f'configs.{CONFIGS[args.model]}')
  config = module.get_config()
  config.model.name = args.model
  config.model.bottleneck = args.bottleneck
  if 'pool_proj' in config.model:
    config.model.pool_proj = (args.bottleneck if args.pool_proj is None
                              else args.pool_proj)
  if args.separable:
    config.model.separable = True
  if args.width is not None:
    config.model.width = args.width
  if args.batch_size is not None:
    config.batch_size = args.batch_size
  config.dtype = args.dtype.split(',')[0]  # validated by the library
  if args.activation_dtype:
    config.activation_dtype = args.activation_dtype
  config.conv_impl = args.conv_impl.split(',')[0]
  # Offline and small: the step's speed depends on the batch shape only.
  config.dataset, config.data_dir = 'digits', ''
  config.train_split, config.eval_split = 'train', 'train[:1%]'
  return config


def _with_impl(config, impl, dtype=None):
  config = config.copy_and_resolve_references()
  config.conv_impl = impl
  config.dtype = dtype or config.dtype
  return config


def gemm_runner(n, dtype=jnp.float32):
  """A closure running a jitted n x n x n ``jnp.dot`` to completion
  (bfloat16 operands accumulate in float32)."""
  a, b = jax.random.normal(jax.random.key(0), (2, n, n)).astype(dtype)
  dot = jax.jit(functools.partial(jnp.dot, preferred_element_type=jnp.float32))
  dot(a, b).block_until_ready()
  return lambda: dot(a, b).block_until_ready()


def jax_runner(config, images, labels):
  """``(run, initial variables on the host)``: ``run`` trains one step.

  The step, its shardings and the initial state are those of training
  (``experiment.setup``); the state is donated from step to step.
  """
  exp = experiment.setup(specs.read(config))
  state = exp.init_state()
  host = jax.device_get({'params': state.params,
                         'batch_stats': state.batch_stats})
  batch = data.global_batch({'image': images, 'label': labels},
                                exp.batch_sharding)
  holder = [state]

  def run():
    holder[0], metrics = exp.train_step(holder[0], batch, exp.dropout_rng)
    jax.block_until_ready((holder[0], metrics))

  return run, host


def measure(args):
  """One configuration; returns the JSON-able result."""
  config = load_config(args)
  model_spec = specs.model_spec(config)
  shape = model_spec.input_shape
  report = flops.analyze(build.model(model_spec), shape, xla=False)
  train_flops = 3 * 2 * report.macs
  gemm = gemm_runner(args.gemm_size)

  b = config.batch_size
  rs = np.random.default_rng(0)
  images = rs.integers(0, 256, (b, *shape), dtype=np.uint8)
  labels = rs.integers(0, config.model.num_classes, (b,), dtype=np.int32)
  # One JAX runner per conv_impl and dtype (e.g. --conv_impl xla,auto:
  # before/after; --dtype float32,bfloat16), all from the same seed, so the
  # same initial weights.
  impls, dtypes = args.conv_impl.split(','), args.dtype.split(',')
  variants = [(i, d) for d in dtypes for i in impls]
  names = [f'jax {d}' + (f' ({i})' if len(impls) > 1 else '')
           for i, d in variants]
  runners = {}
  for name, (impl, dtype) in zip(names, variants):
    runners[name], host_variables = jax_runner(
        _with_impl(config, impl, dtype), images, labels)
  step_flops = {name: train_flops for name in names}
  if args.vs_naive:  # the naive network, same batch, timed in the same rounds
    naive_config = _with_impl(config, impls[-1])  # compared with the last impl
    naive_config.model.update(flops.naive_overrides(config.model.name))
    naive_macs = flops.analyze(build.model(specs.model_spec(naive_config)),
                               shape, xla=False).macs
    names.append(f'jax {args.dtype} naive')
    step_flops[names[-1]] = 3 * 2 * naive_macs
    runners[names[-1]], _ = jax_runner(naive_config, images, labels)
  t = time.perf_counter()
  runners[names[0]]()
  compile_s = time.perf_counter() - t
  for name in names:
    for _ in range(args.warmup + (name != names[0])):
      runners[name]()
  rss_jax = max_rss_mb()
  if args.torch:
    from benchmarks import torch_models  # pylint: disable=g-import-not-at-top
    runners.update(torch_models.torch_runners(
        config, host_variables, images, labels, report.params,
        mean=MEAN, std=STD, threads=num_cores(),
        bf16='bfloat16' in dtypes or onednn.supports_bf16()))
    for name, run in runners.items():
      for _ in range(args.warmup if name.startswith('torch') else 0):
        run()

  # The GEMM peaks are sampled between the steps too: a CPU shared with other
  # work then slows the MFU numerator and denominator alike.
  gemms = {'gemm': gemm}
  if 'bfloat16' in dtypes:
    gemms['gemm bf16 (XLA)'] = gemm_runner(args.gemm_size, jnp.bfloat16)
    if args.torch:
      gemms['gemm bf16 (torch)'] = torch_models.gemm_runner(args.gemm_size)
  runners.update(gemms)
  # Rounds of short blocks, one block per implementation in turn, so that
  # load on a shared machine hits every implementation alike. The first step
  # of each block is untimed: switching runtimes (XLA's thread pool, torch's
  # OpenMP threads) costs the step after the switch, not the implementation.
  rounds = -(-args.steps // args.block)
  per_round = {name: args.block + 1 for name in runners}
  for name in gemms:
    per_round[name] = -(-args.gemm_repeats // rounds) + 1
  times = {name: [] for name in runners}
  for _ in range(rounds):
    for name, run in runners.items():
      for i in range(per_round[name]):
        t = time.perf_counter()
        run()
        if i:
          times[name].append(time.perf_counter() - t)
  gemm_times = times.pop('gemm')
  peak = 2 * args.gemm_size**3 / statistics.median(gemm_times)
  best = 2 * args.gemm_size**3 / min(gemm_times)
  bf16_peaks = {name[len('gemm bf16 ('):-1]: 2 * args.gemm_size**3 /
                statistics.median(times.pop(name)) / 1e9
                for name in list(gemms) if name != 'gemm'}

  results = {}
  for name, ts in times.items():
    step_s = statistics.median(ts)
    ips = b / step_s
    per_image = step_flops.get(name, train_flops)
    results[name] = {'step_ms': 1e3 * step_s, 'images_per_s': ips,
                     'min_step_ms': 1e3 * min(ts),
                     'max_step_ms': 1e3 * max(ts),
                     'model_gflops_per_s': per_image * ips / 1e9,
                     'mfu': per_image * ips / peak}
  jax_ips = results[names[0]]['images_per_s']
  naive = {}
  if args.vs_naive:
    naive = {'naive_macs_per_image': naive_macs,
             'macs_ratio': naive_macs / report.macs,
             'speedup_over_naive': (results[names[-2]]['images_per_s'] /
                                    results[names[-1]]['images_per_s'])}
    naive['speedup_over_macs_ratio'] = (naive['speedup_over_naive'] /
                                        naive['macs_ratio'])
  stats = jax.devices()[0].memory_stats() or {}
  return {
      'model': args.model, 'bottleneck': config.model.bottleneck,
      'pool_proj': config.model.get('pool_proj'), 'width': config.model.width,
      'batch_size': b, 'dtype': args.dtype, 'conv_impl': args.conv_impl,
      'device': str(jax.devices()[0]), 'cores': num_cores(),
      'cpu': provenance.cpu_model(), 'onednn_isa': onednn.cpu_isa(),
      'steps': args.steps, 'warmup': args.warmup, 'params': report.params,
      'forward_macs_per_image': report.macs,
      'train_flops_per_image': train_flops,
      'train_flops_definition': '3 x 2 x forward MACs (inception.models.flops)',
      'gemm_peak_gflops_per_s': peak / 1e9,
      'gemm_best_gflops_per_s': best / 1e9,
      'gemm_peak_definition': f'jitted fp32 jnp.dot {args.gemm_size}^3, '
                              f'median of {len(gemm_times)} interleaved runs',
      'bf16_gemm_peak_gflops_per_s': bf16_peaks,
      'jax_compile_and_first_step_s': compile_s,
      'impls': results,
      'jax_over_torch_images_per_s': {
          name: jax_ips / r['images_per_s'] for name, r in results.items()
          if name.startswith('torch')},
      'jax_over_torch_same_dtype': same_dtype_ratios(results),
      'jax_over_first_impl_images_per_s': {
          name: results[name]['images_per_s'] / jax_ips for name in names[1:]
          if not name.endswith('naive')},
      **naive,
      'max_rss_mb_after_jax_warmup': rss_jax,
      'max_rss_mb': max_rss_mb(),
      'device_peak_bytes_in_use': stats.get('peak_bytes_in_use'),
  }


# PyTorch's twin of each JAX dtype: fp32, and bf16 autocast for bf16.
TORCH_TWIN = {'float32': 'torch float32', 'bfloat16': 'torch bf16 autocast'}


def same_dtype_ratios(results: dict) -> dict:
  """dtype -> JAX images/s over its PyTorch twin's, where both were timed.

  JAX's runner for a dtype is its first (``jax <dtype>``, or the first
  ``--conv_impl`` of that dtype); the naive network's runner is not one.
  """
  ratios = {}
  for dtype, twin in TORCH_TWIN.items():
    jax_name = next((n for n in results if n.startswith(f'jax {dtype}')
                     and not n.endswith('naive')), None)
    if jax_name and twin in results:
      ratios[dtype] = (results[jax_name]['images_per_s'] /
                       results[twin]['images_per_s'])
  return ratios


def print_result(r):
  naive = '' if r['bottleneck'] else ' naive'
  print(f"## {r['model']}{naive} width {r['width']} batch {r['batch_size']}"
        f" ({r['dtype']}, conv_impl={r['conv_impl']}, {r['device']},"
        f" {r['cores']} cores)\n")
  print(f"params {r['params']:,}; forward MACs/image"
        f" {r['forward_macs_per_image']:,}; training FLOPs/image ="
        f" 3 x 2 x forward MACs = {r['train_flops_per_image'] / 1e9:.3f} G")
  print(f"MFU denominator: fp32 GEMM peak {r['gemm_peak_gflops_per_s']:.1f}"
        f" GFLOP/s ({r['gemm_peak_definition']}; best"
        f" {r['gemm_best_gflops_per_s']:.1f})")
  print(f"CPU: {r['cpu']}; oneDNN kernels on"
        f" {r['onednn_isa'] or 'nothing (not installed)'}"
        f" (AMX: {'yes' if 'amx' in r['onednn_isa'] else 'no'})")
  peaks = r.get('bf16_gemm_peak_gflops_per_s') or {}
  if peaks:
    print('bf16 GEMM peak (same size, bf16 operands, f32 sums): ' + ', '.join(
        f'{v:.1f} GFLOP/s through {k}' for k, v in peaks.items()))
  print(f"JAX compile + first step: {r['jax_compile_and_first_step_s']:.1f} s;"
        f" median of {r['steps']} steps after {r['warmup']} warm-up\n")
  print('| implementation | step ms | min..max ms | images/s | model GFLOP/s'
        ' | MFU |\n|---|---|---|---|---|---|')
  for name, s in r['impls'].items():
    print(f"| {name} | {s['step_ms']:.1f} | {s['min_step_ms']:.0f}.."
          f"{s['max_step_ms']:.0f} | {s['images_per_s']:.1f} |"
          f" {s['model_gflops_per_s']:.1f} | {100 * s['mfu']:.1f}% |")
  print()
  if peaks:
    top = max(peaks.values())
    for name, s in r['impls'].items():
      if 'bf' in name:
        print(f"{name}: {100 * s['model_gflops_per_s'] / top:.1f}% of the"
              ' larger bf16 GEMM peak')
  for name, ratio in r['jax_over_torch_images_per_s'].items():
    print(f"JAX {r['dtype'].split(',')[0]} ({r['conv_impl'].split(',')[0]})"
          f" / {name} images/s: {ratio:.2f}x")
  for dtype, ratio in r.get('jax_over_torch_same_dtype', {}).items():
    print(f"same dtype: jax {dtype} / {TORCH_TWIN[dtype]} images/s:"
          f" {ratio:.2f}x")
  for name, ratio in r.get('jax_over_first_impl_images_per_s', {}).items():
    print(f"{name} / jax {r['dtype'].split(',')[0]}"
          f" ({r['conv_impl'].split(',')[0]}) images/s: {ratio:.2f}x")
  if 'macs_ratio' in r:
    print(f"bottleneck / naive images/s: {r['speedup_over_naive']:.2f}x, for"
          f" {r['macs_ratio']:.2f}x fewer MACs: {r['speedup_over_macs_ratio']:.2f}"
          ' of the MACs ratio')
  mem = f"peak RSS {r['max_rss_mb']:.0f} MB"
  if r['impls'].keys() - {f"jax {r['dtype']}"}:
    mem += (f" (JAX alone, after warm-up:"
            f" {r['max_rss_mb_after_jax_warmup']:.0f} MB)")
  if r['device_peak_bytes_in_use'] is not None:
    mem += f"; device peak {r['device_peak_bytes_in_use'] / 2**20:.0f} MiB"
  print(mem + '\n')


def run_all(args):
  """The standard matrix, one subprocess per run (so peak RSS is per run)."""
  results = []
  for model, width, batch, naive_batch in MATRIX:
    for bottleneck in (True, False):
      cmd = [sys.executable, __file__, '--model', model, '--width', str(width),
             '--batch_size', str(batch if bottleneck else naive_batch),
             f'--bottleneck={bottleneck}', '--dtype', args.dtype,
             '--conv_impl', args.conv_impl, '--steps', str(args.steps),
             '--warmup', str(args.warmup), '--json'] + (
                 ['--torch'] if args.torch else [])
      print('running:', ' '.join(cmd[1:]), file=sys.stderr, flush=True)
      proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True,
                            check=False)
      if proc.returncode:
        results.append({'model': model, 'width': width,
                        'bottleneck': bottleneck, 'error': proc.returncode})
        continue
      results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
      if not args.json:
        print_result(results[-1])
  if args.json:
    print(json.dumps({'runs': results}))
    return
  print('| model | bottleneck | width | batch | JAX images/s | step ms | MFU |'
        ' torch fp32 images/s | JAX/torch fp32 | torch bf16 images/s |'
        ' JAX/torch bf16 | peak RSS MB |\n' + '|---' * 12 + '|')
  for r in results:
    if 'error' in r:
      print(f"| {r['model']} | {r['bottleneck']} | {r['width']} | failed"
            f" (exit {r['error']}) |")
      continue
    jx = next(v for k, v in r['impls'].items() if k.startswith('jax'))
    tf = r['impls'].get('torch float32')
    tb = r['impls'].get('torch bf16 autocast')
    ratio = r['jax_over_torch_images_per_s']
    cell = lambda s, k: '-' if s is None else f'{s[k]:.1f}'
    rat = lambda k: f'{ratio[k]:.2f}x' if k in ratio else '-'
    print(f"| {r['model']} | {r['bottleneck']} | {r['width']} |"
          f" {r['batch_size']} | {jx['images_per_s']:.1f} | {jx['step_ms']:.0f}"
          f" | {100 * jx['mfu']:.1f}% | {cell(tf, 'images_per_s')} |"
          f" {rat('torch float32')} | {cell(tb, 'images_per_s')} |"
          f" {rat('torch bf16 autocast')} | {r['max_rss_mb']:.0f} |")


def main():
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n', maxsplit=1)[0])
  parser.add_argument('--model', default='nin_cifar', choices=sorted(CONFIGS))
  parser.add_argument('--batch_size', type=int, default=None,
                      help="default: the config's")
  parser.add_argument('--width', type=float, default=None)
  parser.add_argument('--bottleneck', type=parse_bool, default=True)
  parser.add_argument('--pool_proj', type=parse_bool, default=None,
                      help='GoogLeNet; default: same as --bottleneck (naive)')
  parser.add_argument('--separable', type=parse_bool, default=False,
                      help='GoogLeNet: depthwise-separable 3x3/5x5 branches')
  parser.add_argument('--dtype', default='float32',
                      help="'float32', 'bfloat16', or both, comma-separated:"
                      ' one JAX runner each, timed in turn')
  parser.add_argument('--activation_dtype', default='',
                      choices=('', 'auto', 'float32', 'bfloat16'),
                      help="config.activation_dtype; default: the config's "
                      '(auto: the policy of inception.kernels.backend)')
  parser.add_argument('--conv_impl', default='auto',
                      help="auto, xla or gemm; a list such as 'xla,auto' "
                      'times each, side by side (ratios against the first)')
  parser.add_argument('--steps', type=int, default=None, help='default 10')
  parser.add_argument('--warmup', type=int, default=None, help='default 2')
  parser.add_argument('--block', type=int, default=3,
                      help='timed steps per implementation per round')
  parser.add_argument('--quick', action='store_true',
                      help='3 steps, 1 warm-up (unless given)')
  parser.add_argument('--gemm_size', type=int, default=2048)
  parser.add_argument('--gemm_repeats', type=int, default=10,
                      help='GEMM peak samples, spread over the steps')
  parser.add_argument('--torch', action='store_true',
                      help='also time the PyTorch twin, fp32 and bf16 autocast')
  parser.add_argument('--vs_naive', action='store_true',
                      help='also time the naive network (no 1x1 reductions)'
                      ' at the same batch and the last --conv_impl: speed-up against the'
                      ' MACs ratio')
  parser.add_argument('--json', action='store_true')
  parser.add_argument('--all', action='store_true',
                      help='the standard matrix (MATRIX), bottleneck and naive;'
                      ' ignores --model/--width/--batch_size/--bottleneck')
  args = parser.parse_args()
  if args.steps is None:
    args.steps = 3 if args.quick else 10
  if args.warmup is None:
    args.warmup = 1 if args.quick else 2
  if args.all:
    run_all(args)
    return
  result = measure(args)
  if args.json:
    print(json.dumps(result))
  else:
    print_result(result)


if __name__ == '__main__':
  main()
