"""Checkpoint and sweep analysis, used by notebooks/analysis.ipynb.

Everything the notebook shows is computed here, so that it is tested like
any code: sweep tables and plots, per-layer MACs of the bottleneck and naive
variants, restoring a run, and what a 1x1 reduction does to feature maps.
"""
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from inception import (build, checkpoint, data, experiment, flops, layers,
                       report, steps)

load_sweep = report.load_runs
plot_pareto = report.plot_pareto
plot_curves = report.plot_curves


def results_markdown(sweep_dir: str) -> str:
  """The sweep's results table (writing the report if it is missing)."""
  path = os.path.join(sweep_dir, 'results.md')
  if not os.path.exists(path):
    report.write_report(sweep_dir)
  with open(path, encoding='utf-8') as f:
    return f.read()


def run_config(run_dir: str) -> ml_collections.ConfigDict:
  """The resolved config a run saved in its workdir."""
  with open(os.path.join(run_dir, 'config.json'), encoding='utf-8') as f:
    return ml_collections.ConfigDict(json.load(f))


def layer_macs(config) -> tuple[list[str], list[int], list[int]]:
  """Per-block MACs of the config's model with and without 1x1 reductions."""
  naive = flops.naive_overrides(config.model.name)
  shape = build.input_shape(config)
  a = flops.analyze(build.model(config, **{k: True for k in naive}), shape,
                    xla=False)
  b = flops.analyze(build.model(config, **naive), shape, xla=False)
  macs_b = {blk.name: blk.macs for blk in b.blocks}
  names = [blk.name for blk in a.blocks if blk.macs]
  return names, [blk.macs for blk in a.blocks if blk.macs], [
      macs_b.get(n, 0) for n in names]


def plot_layer_macs(config, ax):
  """Grouped bars: MACs per block, bottleneck against naive (log scale)."""
  names, a, b = layer_macs(config)
  x = np.arange(len(names))
  ax.bar(x - 0.2, a, 0.4, label='with 1x1 bottlenecks')
  ax.bar(x + 0.2, b, 0.4, label='naive (no reductions)')
  ax.set_xticks(x, names, rotation=60, ha='right')
  ax.set_yscale('log')
  ax.set_ylabel('MACs per image')
  ax.set_title(f'{config.model.name}: per-block MACs')
  ax.legend()


def restore(run_dir: str, step: int | None = None):
  """``(experiment, state)`` of a run's latest (or ``step``) checkpoint."""
  config = run_config(run_dir)
  exp = experiment.setup(config)
  ckpt = checkpoint.Checkpointer(run_dir, config.keep_checkpoints)
  try:
    if step is None:
      state, _ = ckpt.restore_latest(exp.abstract_state())
    else:
      state, _ = ckpt.restore(step, exp.abstract_state())
  finally:
    ckpt.close()
  return exp, state


def eval_batch(exp, state, n: int = 64) -> dict:
  """Images, labels and predictions of the first ``n`` eval examples."""
  batch = next(iter(data.eval_batches(exp.config)))
  images, labels = batch['image'][:n], batch['label'][:n]
  logits = _apply(exp, state, images)
  preds = np.asarray(jnp.argmax(logits, -1))
  return {'images': images, 'labels': labels, 'predictions': preds,
          'accuracy': float(np.mean(preds == labels))}


def _apply(exp, state, images, **kwargs):
  x = steps.normalize(jnp.asarray(images), exp.info.mean, exp.info.std,
                      jnp.float32)
  return exp.model.apply({'params': state.params,
                          'batch_stats': state.batch_stats}, x, train=False,
                         **kwargs)


def reduction_layers(exp, state) -> list[str]:
  """Paths of the model's 1x1 ConvBN layers that reduce channels."""
  found = []

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    mod = context.module
    if (isinstance(mod, layers.ConvBN) and context.method_name == '__call__'
        and mod.kernel_size == 1 and out.shape[-1] < args[0].shape[-1]):
      found.append('/'.join(mod.scope.path))
    return out

  with nn.intercept_methods(interceptor):
    jax.eval_shape(lambda: _apply(exp, state, np.zeros(
        (1, *build.input_shape(exp.config)), np.uint8)))
  return found


def reduction_maps(exp, state, images, path: str | None = None) -> dict:
  """Feature maps before and after one 1x1 reduction, and its weights.

  Args:
    exp, state: from ``restore``.
    images: uint8 images [N, H, W, C].
    path: the ConvBN's path (default: the first 1x1 reduction).

  Returns:
    ``path``, ``before`` [N, H, W, C_in] (the layer's input), ``after``
    [N, H, W, C_out] (after BatchNorm and ReLU) and ``weights`` [C_out, C_in].
  """
  if path is None:  # prefer the bottleneck reductions proper
    found = reduction_layers(exp, state)
    path = next((p for p in found if 'reduce' in p), found[0])
  captured = {}

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if ('/'.join(context.module.scope.path) == path
        and context.method_name == '__call__'):
      captured['before'], captured['after'] = args[0], out
    return out

  with nn.intercept_methods(interceptor):
    _apply(exp, state, images)
  params = state.params
  for part in path.split('/'):
    params = params[part]
  kernel = np.asarray(params['conv']['kernel'])[0, 0]  # [C_in, C_out]
  return {'path': path, 'before': np.asarray(captured['before']),
          'after': np.asarray(captured['after']), 'weights': kernel.T}


def plot_images(images, labels, class_names, axes):
  """A row of input images with their labels."""
  for ax, img, label in zip(axes, images, labels):
    ax.imshow(img.squeeze(), cmap='gray' if img.shape[-1] == 1 else None)
    ax.set_title(str(class_names[label]), fontsize=8)
    ax.axis('off')


def plot_feature_maps(maps, axes, title: str):
  """The first channels of one image's feature maps, one per axis."""
  for i, ax in enumerate(axes):
    ax.imshow(maps[..., i], cmap='viridis')
    ax.set_title(f'{title} ch {i}', fontsize=7)
    ax.axis('off')


def plot_weight_matrix(weights, ax, fig, title: str = ''):
  """Heatmap of a 1x1 layer's weights: output channels x input channels."""
  lim = float(np.abs(weights).max()) or 1.0
  im = ax.imshow(weights, cmap='RdBu_r', vmin=-lim, vmax=lim, aspect='auto')
  ax.set_xlabel('input channel')
  ax.set_ylabel('output channel')
  ax.set_title(title or 'weights of the 1x1 reduction')
  fig.colorbar(im, ax=ax)
