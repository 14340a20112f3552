"""Checkpoint and sweep analysis, used by notebooks/analysis.ipynb.

Everything the notebook shows is computed here, so that it is tested like
any code: sweep tables and plots, per-layer MACs of the bottleneck and naive
variants, restoring a run, what a 1x1 reduction does to feature maps, and
how much of its input's variance each trained reduction keeps against PCA.
"""
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from inception import (build, data, evaluate, flops, layers, report, specs,
                       steps, workdir)

# The published ablation, found from the package, not the working directory
# (Jupyter starts notebooks in notebooks/).
DEFAULT_SWEEP = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'results', 'cifar10_ablation')


def load_arms(sweep_dir: str):
  """``(runs, arms)`` of a sweep directory (``inception.report``)."""
  runs = report.load_runs(sweep_dir)
  return runs, report.arms(runs)


def results_markdown(sweep_dir: str) -> str:
  """The sweep's results table (writing the report if it is missing)."""
  path = os.path.join(sweep_dir, 'results.md')
  if not os.path.exists(path):
    report.write_report(sweep_dir)
  with open(path, encoding='utf-8') as f:
    return f.read()


def layer_macs(config) -> tuple[list[str], list[int], list[int]]:
  """Per-block MACs of the config's model with and without 1x1 reductions."""
  model = specs.model_spec(config)
  naive = flops.naive_overrides(model.name)
  a = flops.analyze(build.model(model, **{k: True for k in naive}),
                    model.input_shape, xla=False)
  b = flops.analyze(build.model(model, **naive), model.input_shape, xla=False)
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
  return evaluate.restore_run(workdir.load_config(run_dir), run_dir, step)


def eval_batch(exp, state, n: int = 64) -> dict:
  """Images, labels and predictions of the first ``n`` eval examples."""
  batch = next(iter(data.eval_batches(exp.specs.data)))
  images, labels = batch['image'][:n], batch['label'][:n]
  logits = _apply(exp, state, images)
  preds = np.asarray(jnp.argmax(logits, -1))
  return {'images': images, 'labels': labels, 'predictions': preds,
          'accuracy': float(np.mean(preds == labels))}


def _apply(exp, state, images, **kwargs):
  """The model on ``images``, one op per layer (``conv_impl='xla'``).

  The layer-wise hooks here read each ConvBN's input and output, which a
  fused 1x1 GEMM (``conv_impl='gemm'``) would not show; the XLA path computes
  the same function up to float rounding.
  """
  x = steps.normalize(jnp.asarray(images), exp.info.mean, exp.info.std)
  variables = state.eval_variables()
  return flops.one_op_per_layer(exp.model).apply(variables, x, train=False,
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
        (1, *exp.specs.model.input_shape), np.uint8)))
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
  params = state.eval_variables()['params']
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


def _projection_kept(cov, weights) -> float:
  """Fraction of tr(cov) inside the column space of ``weights`` [C_in, r]."""
  q, _ = np.linalg.qr(weights)
  return float(np.trace(q.T @ cov @ q) / np.trace(cov))


def reduction_variance(exp, state, images) -> list[dict]:
  """What every trained 1x1 reduction keeps of its input, against PCA.

  A 1x1 reduction from C_in to r channels is a learned linear projection of
  each pixel's channel vector (then BatchNorm and ReLU). On ``images``, for
  each such layer: the singular values of its weight matrix, the
  fraction of the input channels' variance that lies in the subspace its
  weights project onto, and the same fraction for PCA at rank r, the most
  any rank-r linear projection can keep. Every 1x1 layer with fewer outputs
  than inputs counts: GoogLeNet's ``*_reduce`` (and narrower ``branch1x1``
  and ``pool_proj``) layers, NiN's cccp layers.

  Returns:
    One dict per reduction: ``path``, ``block``, ``c_in``, ``c_out``,
    ``singular_values``, ``kept`` and ``pca_kept`` (fractions in [0, 1]).
  """
  paths = reduction_layers(exp, state)
  inputs = {}

  def interceptor(next_fun, args, kwargs, context):
    path = '/'.join(context.module.scope.path)
    if path in paths and context.method_name == '__call__':
      inputs[path] = args[0]
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    _apply(exp, state, images)
  rows = []
  for path in paths:
    x = np.asarray(inputs[path], np.float64)
    x = x.reshape(-1, x.shape[-1])
    cov = np.cov(x, rowvar=False)
    params = state.eval_variables()['params']
    for part in path.split('/'):
      params = params[part]
    w = np.asarray(params['conv']['kernel'], np.float64)[0, 0]  # [C_in, r]
    eig = np.sort(np.linalg.eigvalsh(cov))[::-1]
    r = w.shape[1]
    rows.append({'path': path, 'block': path.split('/')[0],
                 'c_in': w.shape[0], 'c_out': r,
                 'singular_values': np.linalg.svd(w, compute_uv=False),
                 'kept': _projection_kept(cov, w),
                 'pca_kept': float(eig[:r].sum() / eig.sum())})
  return rows


def plot_reduction_variance(rows, ax):
  """Variance kept by each reduction and by PCA at the same rank, per layer."""
  x = np.arange(len(rows))
  ax.bar(x - 0.2, [r['kept'] for r in rows], 0.4, label='trained 1x1 reduction')
  ax.bar(x + 0.2, [r['pca_kept'] for r in rows], 0.4,
         label='PCA at the same rank (optimum)')
  names = [f"{r['path'].split('/')[0].removeprefix('inception_')} "
           f"{r['path'].split('/')[-1].removeprefix('branch')}"
           f" {r['c_in']}->{r['c_out']}" for r in rows]
  ax.set_xticks(x, names, rotation=60, ha='right', fontsize=7)
  ax.set_ylim(0, 1.05)
  ax.set_ylabel("fraction of the input's variance")
  ax.set_title('What each 1x1 reduction keeps of its input')
  ax.legend(fontsize='small')


def plot_singular_values(rows, ax):
  """Normalised singular values of each reduction's weights, one line each."""
  for r in rows:
    sv = r['singular_values']
    ax.plot(np.arange(1, len(sv) + 1), sv / sv[0], alpha=0.6,
            label=r['path'].split('/')[0].removeprefix('inception_'))
  ax.set_xlabel('index')
  ax.set_ylabel('singular value / largest')
  ax.set_title('Spectra of the reduction weights')
  ax.grid(True, alpha=0.3)
