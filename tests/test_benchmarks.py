"""The benchmarks import and run at toy sizes (no timing checked)."""
import importlib
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

_MODULES = sorted(f[:-3] for f in os.listdir(os.path.join(REPO, 'benchmarks'))
                  if f.endswith('.py') and f != '__init__.py')


@pytest.mark.parametrize('name', _MODULES)
def test_every_benchmark_imports(name):
  if name == 'torch_models':
    pytest.importorskip('torch')
  importlib.import_module(f'benchmarks.{name}')


@pytest.mark.parametrize('argv', [
    ['benchmarks.fusion', '--width', '0.0625', '--batch', '2', '--repeats',
     '1', '--blocks', '3a', '--json'],
    ['benchmarks.conv_impl', '--batch', '2', '--repeats', '1', '--layers',
     'g/8 3a,sep g/8 3a 3x3,pool 3x3/1 16', '--json'],
    ['benchmarks.compile_time', '--model', 'nin_cifar_tiny', '--batch', '2',
     '--dropouts', 'flat', '--json'],
    ['benchmarks.accounting_time', '--model', 'nin_cifar_tiny', '--widths',
     '1', '--rounds', '1', '--json'],
    # Both dtypes, on any CPU: oneDNN's bf16 is skipped where it is refused.
    ['benchmarks.batchnorm', '--repeats', '1', '--layers', 'g/1 5b 1x1',
     '--json']],
    ids=lambda argv: argv[0])
def test_kernel_benchmarks_run_at_toy_sizes(argv):
  proc = subprocess.run([sys.executable, '-m', *argv], cwd=REPO,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert json.loads(proc.stdout), proc.stdout[-500:]


def test_throughput_names_the_cpu_kernels_and_the_bf16_peak():
  """A toy throughput run: both dtypes, which ISA oneDNN runs on, and the
  bf16 GEMM peak beside the fp32 one."""
  from inception.kernels import onednn  # pylint: disable=g-import-not-at-top
  proc = subprocess.run(
      [sys.executable, '-m', 'benchmarks.throughput', '--model',
       'nin_cifar_tiny', '--batch_size', '4', '--dtype', 'float32,bfloat16',
       '--steps', '1', '--warmup', '0', '--block', '1', '--gemm_size', '64',
       '--gemm_repeats', '1', '--json'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = json.loads(proc.stdout)
  assert set(result['impls']) == {'jax float32', 'jax bfloat16'}
  assert result['onednn_isa'] == onednn.cpu_isa()
  if onednn.available():
    assert result['onednn_isa'].startswith(('avx', 'sse'))
  assert result['bf16_gemm_peak_gflops_per_s']['XLA'] > 0
  assert result['cpu']


def test_init_scale_shows_why_the_paper_nin_is_fragile():
  """He init: a loss above chance and large gradients; a small fixed std: no signal."""
  proc = subprocess.run([sys.executable, '-m', 'benchmarks.init_scale',
                         '--batch', '4', '--json'], cwd=REPO,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  by_init = {r['init']: r for r in json.loads(proc.stdout)}
  assert set(by_init) == {'he', 'lecun', 'gaussian0.05', 'gaussian0.01'}
  assert len(by_init['he']['layers']) == 9
  assert by_init['he']['grad_norm'] > 10 * by_init['lecun']['grad_norm']
  assert by_init['gaussian0.01']['logit_std'] < 1e-5
  assert abs(by_init['gaussian0.01']['loss'] - 2.302585) < 1e-3


def test_jax_is_compared_with_pytorch_in_the_same_dtype():
  """bf16 JAX against bf16 autocast, fp32 against fp32, never across."""
  from benchmarks import throughput  # pylint: disable=g-import-not-at-top
  ips = lambda v: {'images_per_s': v}
  results = {'jax float32': ips(100.), 'jax bfloat16': ips(300.),
             'jax bfloat16 naive': ips(900.), 'torch float32': ips(80.),
             'torch bf16 autocast': ips(200.)}
  assert throughput.same_dtype_ratios(results) == {'float32': 1.25,
                                                   'bfloat16': 1.5}
  # Without PyTorch's bf16 twin, no bf16 ratio; a second --conv_impl of a
  # dtype does not replace its first.
  results = {'jax float32 (xla)': ips(50.), 'jax float32 (auto)': ips(100.),
             'torch float32': ips(100.)}
  assert throughput.same_dtype_ratios(results) == {'float32': 0.5}
