"""The benchmarks import and their kernel races run at toy sizes (no timing checked)."""
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
     'g/8 3a,sep g/8 3a 3x3,pool 3x3/1 16', '--json']],
    ids=lambda argv: argv[0])
def test_kernel_benchmarks_run_at_toy_sizes(argv):
  proc = subprocess.run([sys.executable, '-m', *argv], cwd=REPO,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert json.loads(proc.stdout), proc.stdout[-500:]
