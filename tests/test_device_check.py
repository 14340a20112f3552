"""benchmarks/device_check.py runs here in its tiny CPU mode and writes its tables."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_device_check_runs_tiny_on_the_cpu(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'benchmarks.device_check', '--tiny', '--out',
       str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  (folder,) = os.listdir(tmp_path)
  assert folder.endswith('_cpu')
  result = json.load(open(tmp_path / folder / 'device_check.json'))
  assert result['device']['platform'] == 'cpu'
  assert set(result['gemm_peak_flops']) == {'float32', 'bfloat16'}
  # The tiny network's first steps agree with the reference this script
  # carries (recorded on a CPU).
  assert {r['dtype'] for r in result['correctness']} == {'float32',
                                                         'bfloat16'}
  assert all(r.get('agrees') for r in result['correctness']), \
      result['correctness']
  rows = result['throughput']
  assert len(rows) == 2  # the tiny network's step in both dtypes
  assert {r['model'] for r in rows} == {'nin_cifar_tiny'}
  assert all(r['images_per_s'] > 0 and r['compile_s'] > 0 for r in rows)
  cache = result['compile_cache']
  assert cache['second_compile_s'] < cache['first_compile_s']
  table = open(tmp_path / folder / 'device_check.md').read()
  assert '## Training throughput' in table and 'MFU' in table
