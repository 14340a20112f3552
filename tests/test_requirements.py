"""The CPU, GPU and TPU requirement sets pin one jax, and each one resolves."""
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO

SETS = ('requirements.txt', 'requirements-gpu.txt', 'requirements-tpu.txt')
# jax 0.10.2's own pins for its accelerator extras (its METADATA):
# jax[tpu] -> libtpu==0.0.42.*, jax[cuda12] -> jax-cuda12-plugin==<jax>.
_LIBTPU_FOR_JAX = {'0.10.2': '0.0.42'}


def _pins(name: str) -> dict[str, str]:
  """package -> pinned version of a requirements file, -r files followed."""
  pins = {}
  with open(os.path.join(REPO, name)) as f:
    for line in f:
      line = line.split('#')[0].strip()
      if line.startswith('-r '):
        pins.update(_pins(line[3:].strip()))
      elif '==' in line:
        package, version = line.split(';')[0].split('==')
        pins[re.sub(r'\[.*\]', '', package).strip().lower()] = version.strip()
  return pins


def test_every_set_pins_the_same_jax_jaxlib_and_flax():
  pins = {name: _pins(name) for name in SETS}
  for package in ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint'):
    assert len({p[package] for p in pins.values()}) == 1, package
  jax = pins['requirements.txt']['jax']
  assert pins['requirements.txt']['jaxlib'] == jax
  gpu, tpu = pins['requirements-gpu.txt'], pins['requirements-tpu.txt']
  assert gpu['jax-cuda12-plugin'] == gpu['jax-cuda12-pjrt'] == jax
  assert tpu['libtpu'].startswith(_LIBTPU_FOR_JAX[jax] + '.') or (
      tpu['libtpu'] == _LIBTPU_FOR_JAX[jax])
  # oneDNN is the CPU set's alone.
  assert 'onednn-cpu-gomp' in pins['requirements.txt']
  assert not any(k.startswith('onednn') for k in {**gpu, **tpu})


@pytest.mark.skipif(os.environ.get('INCEPTION_OFFLINE') == '1',
                    reason='needs the package index')
@pytest.mark.parametrize('name', ['requirements-gpu.txt',
                                  'requirements-tpu.txt'])
def test_the_platform_packages_resolve_on_the_index(name, tmp_path):
  """pip resolves the platform's own pins (metadata only, nothing installed)."""
  shared = _pins('requirements-common.txt')
  own = {k: v for k, v in _pins(name).items() if k not in shared}
  proc = subprocess.run(
      [sys.executable, '-m', 'pip', 'install', '--dry-run', '--no-deps',
       '--ignore-installed', '--quiet', '--disable-pip-version-check',
       '--report', str(tmp_path / 'report.json'),
       *[f'{k}=={v}' for k, v in own.items()]],
      capture_output=True, text=True, timeout=300)
  if proc.returncode != 0 and ('Network' in proc.stderr
                               or 'connection' in proc.stderr.lower()):
    pytest.skip('no package index reachable')
  assert proc.returncode == 0, proc.stderr[-2000:]
  import json  # pylint: disable=g-import-not-at-top
  report = json.load(open(tmp_path / 'report.json'))
  resolved = {i['metadata']['name'].lower(): i['metadata']['version']
              for i in report['install']}
  assert resolved == own


def test_the_package_installs_without_a_compiler(tmp_path):
  """``pip install -e .`` needs no C++ compiler: the oneDNN kernels are their own package.

  Builds the package's wheel from a copy of its sources with every compiler
  made to fail (``CC``/``CXX``) and none on PATH; the wheel is pure Python.
  """
  import shutil  # pylint: disable=g-import-not-at-top
  import zipfile  # pylint: disable=g-import-not-at-top
  src = tmp_path / 'src'
  for name in ('inception', 'configs', 'benchmarks'):
    shutil.copytree(os.path.join(REPO, name), src / name,
                    ignore=shutil.ignore_patterns('__pycache__', '*.so'))
  for name in ('pyproject.toml', 'README.md'):
    shutil.copy(os.path.join(REPO, name), src / name)
  env = {'PATH': os.path.dirname(sys.executable), 'CC': 'false', 'CXX': 'false',
         'HOME': str(tmp_path), 'PIP_DISABLE_PIP_VERSION_CHECK': '1'}
  out = subprocess.run(
      [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-index',
       '--no-build-isolation', '-w', str(tmp_path / 'dist'), str(src)],
      env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  wheel, = (tmp_path / 'dist').glob('inception_1x1-*.whl')
  assert 'py3-none-any' in wheel.name
  names = zipfile.ZipFile(wheel).namelist()
  assert 'inception/kernels/backend.py' in names
  assert not [n for n in names if n.endswith('.so')]
  assert not os.path.exists(os.path.join(REPO, 'setup.py'))
