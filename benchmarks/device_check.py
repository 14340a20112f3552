"""One device check: what this codebase does on the accelerator at hand.

  python -m benchmarks.device_check                 # ~8 min on one GPU/TPU
  python -m benchmarks.device_check --tiny --out /tmp/dc   # ~1 min, on CPU
  python -m benchmarks.device_check --write_reference     # on a CPU

Writes ``<out>/<date>_<device>/device_check.json`` and ``device_check.md``
(``--out`` defaults to ``results/device``):
  * the device, jax and jaxlib versions, and the GEMM peak in float32 and
    bfloat16 measured in this run (a jitted square ``jnp.dot``);
  * correctness: a short training run of the quickstart (GoogLeNet-CIFAR at
    1/8 width on the embedded digits) and of GoogLeNet-CIFAR at 1/8 width at
    32x32, in float32 and bfloat16, whose losses are compared with the CPU
    reference this script carries (``device_check_reference.json``, written
    on a CPU by ``--write_reference``); ``--tiny`` runs the tests' tiny NiN
    instead, for every part below too;
  * training throughput, MFU (model FLOPs over the peak of the same dtype)
    and device memory (XLA's accounting of the compiled step) of ``googlenet_cifar`` at widths 1/8 and 1 and of
    ``googlenet`` at 224x224, in both dtypes, at several batch sizes, with
    the compile time apart;
  * the persistent compilation cache: the same step compiled in two fresh
    processes sharing one cache directory.

The data is the digits scikit-learn ships (upscaled where the model wants
32x32 or 224x224): no download. The accelerator machine needs this
repository's Python dependencies (requirements-gpu.txt or -tpu.txt; no
TensorFlow is needed).
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from configs import quickstart
from inception import models
from inception.models import flops
from inception import data
from inception.training import build, experiment, specs, loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                         'device_check_reference.json')
DTYPES = ('float32', 'bfloat16')
# (name, model overrides, image size, batch sizes).
THROUGHPUT = [
    ('googlenet_cifar w1/8', {'name': 'googlenet_cifar', 'width': 0.125}, 32,
     (128, 256, 512)),
    ('googlenet_cifar w1', {'name': 'googlenet_cifar', 'width': 1.0}, 32,
     (64, 128, 256)),
    ('googlenet 224', {'name': 'googlenet', 'width': 1.0, 'aux_logits': True},
     224, (32, 64, 128)),
]
# Loss curves agree when every logged loss is within this relative distance
# of the CPU reference's (float rounding and kernel choice differ).
TOLERANCE = 0.05


def _config(model: dict, image_size: int, batch_size: int, dtype: str,
            steps: int, channels: int = 1):
  """The quickstart's config with ``model`` and the sizes replaced.

  ``model`` overrides the quickstart's model options; those the model it
  names lacks (e.g. GoogLeNet's ``pool_proj`` for NiN) are dropped.
  """
  config = quickstart.get_config()
  options = {**config.model.to_dict(), **model}
  valid = models.model_options(options['name'])
  config.model = ml_collections.ConfigDict(
      {k: v for k, v in options.items() if k == 'name' or k in valid})
  config.image_size, config.batch_size, config.dtype = (
      image_size, batch_size, dtype)
  config.channels = channels
  config.num_train_steps, config.log_every_steps = steps, 1
  config.eval_every_epochs, config.checkpoint_every_steps = 0.0, steps
  return config


def device_info() -> dict:
  import jaxlib.version
  d = jax.devices()[0]
  return {'platform': d.platform, 'device_kind': d.device_kind,
          'device_count': jax.device_count(), 'jax': jax.__version__,
          'jaxlib': jaxlib.version.__version__,
          'date': datetime.date.today().isoformat()}


def gemm_peak(n: int, dtype: str, repeats: int) -> float:
  """FLOP/s of a jitted n x n x n ``jnp.dot`` in ``dtype`` (median)."""
  a, b = jax.random.normal(jax.random.key(0), (2, n, n), jnp.float32).astype(
      dtype)
  dot = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
  dot(a, b).block_until_ready()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    dot(a, b).block_until_ready()
    times.append(time.perf_counter() - t)
  return 2 * n**3 / statistics.median(times)


def losses(config, workdir: str) -> list[float]:
  """The logged training losses of a short run of ``config``."""
  loop.train_and_evaluate(config, workdir)
  out = []
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    for line in f:
      record = json.loads(line)
      if 'train/loss' in record:
        out.append(record['train/loss'])
  return out


CORRECTNESS = [('quickstart', {}, 8), ('googlenet_cifar w1/8 32x32',
                                        {'width': 0.125}, 32)]
# --tiny: the tests' compile-light network (NiN at 1/16 width, BatchNorm) on
# the 8x8 digits. A tiny run checks this script, not a model.
TINY = ('nin_cifar_tiny', {'name': 'nin_cifar_tiny', 'width': 1.0,
                           'use_bn': True}, 8)


def correctness(steps: int, reference: dict | None,
                runs=tuple(CORRECTNESS)) -> list[dict]:
  rows = []
  for name, model, size in runs:
    for dtype in DTYPES:
      with tempfile.TemporaryDirectory() as workdir:
        got = losses(_config(model, size, 64, dtype, steps), workdir)
      row = {'run': name, 'dtype': dtype, 'steps': len(got),
             'first_loss': got[0], 'last_loss': got[-1], 'losses': got}
      ref = (reference or {}).get(f'{name}/{dtype}')  # losses, step by step
      if ref and len(ref) >= len(got):
        rel = [abs(a - b) / max(abs(b), 1e-6) for a, b in zip(got, ref)]
        row.update(max_rel_diff=max(rel), agrees=max(rel) <= TOLERANCE)
      rows.append(row)
  return rows


def _step_runner(config):
  """A timed-step callable for ``config``, compiled once, ahead of time.

  ``run.compile_s`` is the lowering and compile; ``run.memory`` is the compiled
  step's device memory (XLA's own accounting) or None where the backend has no
  such analysis. The step that runs is the one measured: no second compile.
  """
  exp = experiment.setup(specs.read(config))
  state = exp.init_state()
  shape = specs.model_spec(config).input_shape
  rs = np.random.default_rng(0)
  b = config.batch_size
  batch = data.global_batch(
      {'image': rs.integers(0, 256, (b, *shape), dtype=np.uint8),
       'label': rs.integers(0, 10, (b,), dtype=np.int32)}, exp.batch_sharding)
  t = time.perf_counter()
  step = exp.train_step.lower(state, batch, exp.dropout_rng).compile()
  compile_s = time.perf_counter() - t
  holder = [state]

  def run():
    holder[0], m = step(holder[0], batch, exp.dropout_rng)
    jax.block_until_ready((holder[0], m))

  run.compile_s = compile_s
  try:
    analysis = step.memory_analysis()
    run.memory = int(analysis.argument_size_in_bytes
                     + analysis.output_size_in_bytes
                     + analysis.temp_size_in_bytes
                     - analysis.alias_size_in_bytes)
  except Exception:  # pylint: disable=broad-except
    run.memory = None  # a backend without the analysis
  return run


def throughput(cases, steps: int, peaks: dict) -> list[dict]:
  rows = []
  for name, model, size, batches in cases:
    spec = specs.model_spec(_config(model, size, 1, 'float32', 1, 3))
    macs = flops.analyze(build.model(spec), spec.input_shape, xla=False).macs
    for dtype in DTYPES:
      for b in batches:
        row = {'model': name, 'dtype': dtype, 'batch_size': b}
        try:
          run = _step_runner(_config(model, size, b, dtype, steps, 3))
          row['compile_s'] = run.compile_s
          run()  # warm-up
          times = []
          for _ in range(steps):
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
          step_s = statistics.median(times)
          row.update(step_ms=1e3 * step_s, images_per_s=b / step_s,
                     mfu=3 * 2 * macs * b / step_s / peaks[dtype],
                     peak_memory_bytes=run.memory)
        except Exception as e:  # pylint: disable=broad-except
          # e.g. out of memory at the largest batch: recorded, not fatal.
          row['error'] = f'{type(e).__name__}: {str(e).splitlines()[0][:200]}'
        rows.append(row)
  return rows


_PROBE = """
import json, sys
from benchmarks import device_check as d
run = d._step_runner(d._config(json.loads(sys.argv[1]), 8, 64, 'float32', 2))
print(run.compile_s)
"""


def compile_cache(model: dict) -> dict:
  """First and second compile of one step, in fresh processes, one cache.

  Args:
    model: the quickstart's model options to override (``_config``).
  """
  with tempfile.TemporaryDirectory() as cache:
    env = {**os.environ, 'JAX_COMPILATION_CACHE_DIR': cache,
           'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
           'PYTHONPATH': REPO}
    seconds = []
    for _ in range(2):
      out = subprocess.run([sys.executable, '-c', _PROBE, json.dumps(model)],
                           env=env, cwd=REPO,
                           capture_output=True, text=True, timeout=600)
      if out.returncode != 0:
        return {'error': out.stderr.strip().splitlines()[-1][:200]}
      seconds.append(float(out.stdout.strip().splitlines()[-1]))
  return {'first_compile_s': seconds[0], 'second_compile_s': seconds[1]}


def markdown(result: dict) -> str:
  d = result['device']
  lines = [f"# Device check: {d['device_kind']} ({d['platform']}, "
           f"{d['device_count']} device(s)), {d['date']}", '',
           f"jax {d['jax']}, jaxlib {d['jaxlib']}. GEMM peak: "
           + ', '.join(f'{k} {v / 1e12:.2f} TFLOP/s'
                       for k, v in result['gemm_peak_flops'].items()), '',
           '## Correctness (loss curves against the CPU reference)', '',
           '| run | dtype | steps | first loss | last loss | max rel. diff | '
           'agrees |', '|---|---|---|---|---|---|---|']
  for r in result['correctness']:
    diff = r.get('max_rel_diff')
    lines.append(f"| {r['run']} | {r['dtype']} | {r['steps']} | "
                 f"{r['first_loss']:.4f} | {r['last_loss']:.4f} | "
                 f"{'' if diff is None else f'{diff:.3f}'} | "
                 f"{r.get('agrees', 'no reference')} |")
  lines += ['', '## Training throughput', '',
            '| model | dtype | batch | compile s | step ms | images/s | MFU |'
            ' peak memory GiB |', '|---|---|---|---|---|---|---|---|']
  for r in result['throughput']:
    if 'error' in r:
      lines.append(f"| {r['model']} | {r['dtype']} | {r['batch_size']} | "
                   f"{r['error']} | | | | |")
      continue
    mem = r['peak_memory_bytes']
    lines.append(f"| {r['model']} | {r['dtype']} | {r['batch_size']} | "
                 f"{r['compile_s']:.1f} | {r['step_ms']:.1f} | "
                 f"{r['images_per_s']:.0f} | {100 * r['mfu']:.1f}% | "
                 f"{'' if mem is None else f'{mem / 2**30:.2f}'} |")
  c = result['compile_cache']
  lines += ['', '## Persistent compilation cache', '',
            (f"one step compiled in a fresh process: {c['first_compile_s']:.1f}"
             f" s; again in another process with the same cache: "
             f"{c['second_compile_s']:.1f} s") if 'error' not in c
            else f"failed: {c['error']}"]
  return '\n'.join(lines) + '\n'


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', default=os.path.join(REPO, 'results', 'device'))
  parser.add_argument('--tiny', action='store_true',
                      help='seconds on a CPU: small sizes, for tests')
  parser.add_argument('--write_reference', action='store_true',
                      help='only run the correctness runs and record them as '
                      'the CPU reference (run on a CPU)')
  args = parser.parse_args(argv)
  if args.write_reference and (args.tiny or jax.default_backend() != 'cpu'):
    parser.error('--write_reference records the full correctness runs on a '
                 'CPU')
  gemm_n = 256 if args.tiny else 8192
  cases = [(*TINY, (8,))] if args.tiny else THROUGHPUT
  reference = None
  if os.path.exists(REFERENCE):
    with open(REFERENCE) as f:
      reference = json.load(f)
  result = {'device': device_info(), 'tiny': args.tiny}
  result['gemm_peak_flops'] = {dt: gemm_peak(gemm_n, dt, 3 if args.tiny
                                             else 10) for dt in DTYPES}
  result['correctness'] = correctness(
      3 if args.tiny else 30, reference,
      [TINY] if args.tiny else
      CORRECTNESS + [TINY] * args.write_reference)
  if args.write_reference:  # on a CPU: only the correctness runs
    with open(REFERENCE, 'w') as f:
      json.dump({'device': result['device'],
                 **{f"{r['run']}/{r['dtype']}": r['losses']
                    for r in result['correctness']}}, f, indent=1)
    print(f'written: {REFERENCE}')
    return REFERENCE
  result['throughput'] = throughput(cases, 2 if args.tiny else 10,
                                    result['gemm_peak_flops'])
  result['compile_cache'] = compile_cache(TINY[1] if args.tiny else {})
  d = result['device']
  folder = os.path.join(args.out, f"{d['date']}_{d['device_kind']}".replace(
      ' ', '_').replace('/', '_'))
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, 'device_check.json'), 'w') as f:
    json.dump(result, f, indent=1)
  with open(os.path.join(folder, 'device_check.md'), 'w') as f:
    f.write(markdown(result))
  print(markdown(result))
  print(f'written: {folder}')
  return folder


if __name__ == '__main__':
  main()
