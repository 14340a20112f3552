"""Where a result came from: the code's git commit, library versions, machine.

Recorded in every run's ``summary.json``, so that a report can refuse to
compare wall times across different code or machines without saying so.
"""
import functools
import os
import platform
import subprocess

import jax

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _git(*args) -> str | None:
  try:
    out = subprocess.run(['git', '-C', _ROOT, *args], capture_output=True,
                         text=True, timeout=10, check=True)
  except (OSError, subprocess.SubprocessError):
    return None
  return out.stdout.strip()


def cpu_model() -> str:
  """The processor's marketing name (Linux /proc/cpuinfo), else platform's."""
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


@functools.cache
def provenance() -> dict:
  """Commit (with a ``-dirty`` suffix for uncommitted changes), versions, machine.

  Where the code is a staged copy (a cluster job's tree, without its
  ``.git`` or with a stale one), whoever copied a clean checkout sets
  ``$INCEPTION_GIT_COMMIT``, which then wins over what git says.
  """
  import flax  # pylint: disable=g-import-not-at-top
  commit = os.environ.get('INCEPTION_GIT_COMMIT')
  if not commit:
    commit = _git('rev-parse', 'HEAD')
    if commit and _git('status', '--porcelain', '--untracked-files=no'):
      commit += '-dirty'
  device = jax.devices()[0]
  return {
      'git_commit': commit,
      'jax_version': jax.__version__,
      'flax_version': flax.__version__,
      'python_version': platform.python_version(),
      'cpu': cpu_model(),
      'cpu_count': os.cpu_count(),
      'backend': jax.default_backend(),
      'device_kind': device.device_kind,
  }
