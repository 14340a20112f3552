"""What the benchmarks share: timing compiled functions side by side.

``race`` runs every candidate once per round, in turn, so a machine whose
speed drifts slows them alike and the ratios of the medians hold.
"""
import statistics
import time

import jax
import jax.numpy as jnp


def grad_timer(fn, *args):
  """A callable that runs forward + backward of ``fn`` (compiled first)."""
  step = jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a) ** 2), argnums=(0, 1)
                          if len(args) > 1 else 0))
  jax.block_until_ready(step(*args))
  return lambda: jax.block_until_ready(step(*args))


def race(fns: dict, repeats: int) -> dict:
  """name -> median seconds of ``fns[name]()`` over ``repeats`` rounds."""
  times = {k: [] for k in fns}
  for _ in range(repeats):
    for k, f in fns.items():
      t = time.perf_counter()
      f()
      times[k].append(time.perf_counter() - t)
  return {k: statistics.median(v) for k, v in times.items()}
