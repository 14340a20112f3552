"""Independent oracle: the PyTorch twins give the flax models' logits.

Optional: skipped unless torch is installed (``requirements-bench.txt``).
Same weights (flax init, every bias, BatchNorm affine and running statistic
perturbed away from its trivial init value), eval mode, same input; torch
runs channels_last on NCHW views of the flax NHWC input.
"""
import pytest

torch = pytest.importorskip('torch')

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import numpy as np

from benchmarks import torch_models
from inception import models

CASES = [
    ('nin_cifar_tiny', {}, 32),
    # Odd size: flax 'SAME' pools pad on both sides there, not just high.
    ('nin_cifar_tiny', {}, 33),
    ('nin_cifar_tiny', {'bottleneck': False}, 32),
    ('nin_cifar_tiny', {'classifier_relu': False}, 32),
    ('googlenet_cifar_tiny', {}, 32),
    ('googlenet_cifar_tiny', {'bottleneck': False, 'pool_proj': False}, 32),
]


def _perturb(variables, seed):
  """Random 1-D params (biases, BN scale/offset) and BatchNorm statistics.

  At init these are 0 or 1, which would hide a swapped or untransposed copy.
  """
  rng = np.random.default_rng(seed)

  def params(x):
    x = np.asarray(x)
    return x if x.ndim > 1 else (1.0 + 0.2 * rng.standard_normal(x.shape)
                                 if np.all(x == 1) else
                                 0.1 * rng.standard_normal(x.shape)).astype(
                                     np.float32)

  def stats(path, x):
    x = np.asarray(x)
    if path[-1].key == 'var':
      return rng.uniform(0.5, 2.0, x.shape).astype(np.float32)
    return (0.2 * rng.standard_normal(x.shape)).astype(np.float32)

  out = {'params': jax.tree.map(params, variables['params'])}
  if 'batch_stats' in variables:
    out['batch_stats'] = jax.tree_util.tree_map_with_path(
        stats, variables['batch_stats'])
  return out


def _flax_and_torch(name, kwargs, size, seed=0):
  model = models.get_model(name, **kwargs)
  variables = models.init_variables(model, (size, size, 3),
                                    jax.random.key(seed))
  variables = _perturb(variables, seed)
  twin = torch_models.torch_model_for(name, **kwargs)
  torch_models.load_flax_variables(twin, variables)
  return model, variables, twin.to(memory_format=torch.channels_last).eval()


@pytest.mark.parametrize('name,kwargs,size', CASES)
def test_torch_twin_matches_flax(name, kwargs, size):
  model, variables, twin = _flax_and_torch(name, kwargs, size)
  n_flax = sum(np.size(p) for p in jax.tree.leaves(variables['params']))
  assert torch_models.param_count(twin) == n_flax

  x = np.random.default_rng(1).standard_normal((4, size, size, 3)).astype(
      np.float32)
  # Backend optimisation level 0: a few seconds less compile, same fp32 math.
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(
      variables, x).compile(
          compiler_options={'xla_backend_optimization_level': 0})
  expected = np.asarray(apply(variables, x))
  with torch.no_grad():
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(
        memory_format=torch.channels_last)
    got = twin(xt).numpy()
  assert got.shape == expected.shape == (4, 10)
  # A swapped branch or pool would change logits by O(1), not by rounding.
  assert np.abs(expected).max() > 1e-3
  np.testing.assert_allclose(got, expected, rtol=1e-4,
                             atol=1e-4 * np.abs(expected).max())


def test_loader_rejects_a_different_architecture():
  _, variables, _ = _flax_and_torch('nin_cifar_tiny', {}, 32)
  naive = torch_models.torch_model_for('nin_cifar_tiny', bottleneck=False)
  with pytest.raises(ValueError):
    torch_models.load_flax_variables(naive, variables)
