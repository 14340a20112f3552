"""Shared test set-up: a persistent compile cache and small-run helpers."""
import os
import subprocess
import sys
import tempfile

# Before JAX is imported: every test process and every subprocess it starts
# shares compiled programs, so a model compiles once per session, not per run.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(
    tempfile.gettempdir(), 'inception-1x1-tests-jax-cache'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# Tests compile far more than they compute: XLA:CPU's backend at -O0 compiles
# a GoogLeNet step markedly faster, and every test process shares the flag
# (tests that add a flag go through ``xla_flags``).
TEST_XLA_FLAGS = '--xla_backend_optimization_level=0'
os.environ.setdefault('XLA_FLAGS', TEST_XLA_FLAGS)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The one small run most end-to-end tests share (same program, compiled once):
# tests/tiny_config.py (the quickstart's digits with a tiny NiN), 8 steps of
# batch 64.
CONFIG = 'tests/tiny_config.py'
# Params and MACs per image of tests/tiny_config.py's model, pinned.
TINY_PARAMS, TINY_MACS = 4_324, 70_368
QUICK_OVERRIDES = {
    'num_train_steps': 8, 'log_every_steps': 1, 'checkpoint_every_steps': 4,
    'eval_every_epochs': 0.0,
}


def quick_config(**overrides):
  """tests/tiny_config.py with QUICK_OVERRIDES and ``overrides`` applied."""
  import tiny_config  # pylint: disable=g-import-not-at-top
  config = tiny_config.get_config()
  config.update({**QUICK_OVERRIDES, **overrides})
  return config


def cli_overrides(**overrides) -> list[str]:
  """``--config.k=v`` flags for QUICK_OVERRIDES plus ``overrides``."""
  return [f'--config.{k}={v}' for k, v in {**QUICK_OVERRIDES,
                                           **overrides}.items()]


def xla_flags(*flags: str) -> dict[str, str]:
  """An env entry adding ``flags`` to the session's XLA_FLAGS."""
  return {'XLA_FLAGS': ' '.join([os.environ.get('XLA_FLAGS', ''), *flags]
                                ).strip()}


def run_cli(*args, env=None, timeout=300, **kwargs):
  """Runs ``python <args>`` in the repository root and returns the result."""
  return subprocess.run([sys.executable, *args], cwd=REPO, text=True,
                        capture_output=True, timeout=timeout,
                        env={**os.environ, **(env or {})}, **kwargs)


def final_state(workdir):
  """(params, batch_stats, opt_state) of a run's latest checkpoint, on host."""
  import jax  # pylint: disable=g-import-not-at-top
  from inception.sweeps import analysis  # pylint: disable=g-import-not-at-top
  _, state = analysis.restore(workdir)
  return jax.device_get((state.params, state.batch_stats, state.opt_state))


def assert_same_state(a, b):
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(x, y)


def records(workdir, key):
  """step -> value of ``key`` in a run's metrics.jsonl."""
  from inception.training import metrics, workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  return {r['step']: r[key] for r in metrics.read_jsonl(
      os.path.join(workdir, workdir_lib.METRICS)) if key in r}


def record_steps(workdir, key):
  """Every step that has ``key``, in file order (duplicates kept)."""
  from inception.training import metrics, workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  return [r['step'] for r in metrics.read_jsonl(
      os.path.join(workdir, workdir_lib.METRICS)) if key in r]


import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope='session')
def straight_run(tmp_path_factory):
  """The quick config trained 8 steps in one go: the reference run."""
  from inception.training import loop  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp('straight'))
  summary = loop.train_and_evaluate(quick_config(), workdir)
  return workdir, summary


# The longest files first: with --dist loadfile, a long file collected last
# would keep one worker busy while the other has nothing left to run.
_LONGEST_FIRST = ('test_launchers.py', 'test_sweep.py', 'test_reliability.py',
                  'test_train.py', 'test_device_check.py',
                  'test_run_integrity.py', 'test_cli_errors.py',
                  'test_layers.py', 'test_onednn.py')


def pytest_collection_modifyitems(config, items):
  del config
  rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(os.path.basename(str(item.path)),
                                       len(rank)))
