"""Checkpoint and sweep analysis, used by notebooks/analysis.ipynb.

Everything the notebook shows is computed here, so that it is tested like
any code: which sweep to read, sweep tables and plots, per-layer MACs of the
bottleneck and naive variants, restoring a run, what a 1x1 reduction does to
feature maps, how much of its input's variance each trained reduction keeps
against PCA, and one sentence per section saying what its numbers say
(computed from them; a difference is called real only when its 95% interval
excludes zero).
"""
import contextlib
import dataclasses
import math
import os
import warnings

from absl import logging as absl_logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

from inception import data
from inception.models import flops, layers
from inception.sweeps import report, stats
from inception.training import (build, checkpoint, evaluate, specs, steps,
                                workdir)
from inception.errors import UserError

# Found from the package, not the working directory (Jupyter starts notebooks
# in notebooks/). The default is the sweep `make demo` writes, which keeps its
# checkpoints; without it, the published ablation, which ships without them.
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
DEFAULT_SWEEP = os.path.join(_REPO, 'runs', 'demo')
PUBLISHED_SWEEP = os.path.join(_REPO, 'results', 'cifar10_ablation')
SWEEP_ENV = 'ANALYSIS_SWEEP_DIR'  # overrides both


@dataclasses.dataclass
class Sweep:
  """A sweep directory as the notebook reads it."""
  path: str
  runs: list[report.RunResult]
  arms: list[report.Arm]
  run: report.RunResult | None  # the finished run whose weights are analysed
  note: str  # which sweep this is, why, and what is left out

  @property
  def done(self) -> list[report.RunResult]:
    return [r for r in self.runs if r.status == 'done']


def _has_runs(path: str) -> bool:
  try:
    return bool(report.load_runs(path, warn=lambda _: None))
  except UserError:
    return False


def checkpointed_run(runs) -> report.RunResult | None:
  """A finished run with checkpoints, a bottleneck one if there is one.

  Bottleneck runs first: they are the ones with 1x1 reductions to look at.
  """
  found = [r for r in runs if r.status == 'done'
           and checkpoint.has_checkpoints(r.workdir)]
  return next((r for r in found if r.kind == 'bottleneck'),
              found[0] if found else None)


def open_sweep(path: str | None = None, default: str = DEFAULT_SWEEP,
               fallback: str = PUBLISHED_SWEEP) -> Sweep:
  """The sweep to analyse: ``path``, else $ANALYSIS_SWEEP_DIR, else the demo.

  Without the demo's sweep (``make demo`` writes it), the published results
  in ``fallback``; the note says how to get the demo's, and that the sections
  that need trained weights are left out when no run has checkpoints.
  """
  from_env = not path and os.environ.get(SWEEP_ENV)
  path = path or os.environ.get(SWEEP_ENV)
  if path:
    note = f'{path} ({SWEEP_ENV})' if from_env else path
  elif _has_runs(default):
    path, note = default, f'{default}, the demo sweep'
  else:
    path = fallback
    note = (f'{fallback}, the published results: {default} does not exist '
            'yet. `make demo` creates it (the quickstart GoogLeNet on the '
            'embedded digits, bottleneck against naive, two seeds each, '
            'checkpoints kept; a few minutes on a 2-core CPU), and this '
            'notebook then analyses it')
  runs, all_arms = load_arms(path)
  run = checkpointed_run(runs)
  done = sum(r.status == 'done' for r in runs)
  note = (f'Analysing {note}.\n{len(runs)} runs, {done} finished, '
          f'{len(all_arms)} arms.')
  if run is None:
    note += ('\nNo finished run here has checkpoints (published results '
             'ship without them): the table, curves and MACs are shown, and '
             'the three sections that need trained weights are left out.')
  else:
    note += f'\nTrained weights: {run.name}.'
  return Sweep(path, runs, all_arms, run, note)


def load_arms(sweep_dir: str):
  """``(runs, arms)`` of a sweep directory (``inception.sweeps.report``)."""
  runs = report.load_runs(sweep_dir)
  return runs, report.arms(runs)


def results_markdown(sweep_dir: str) -> str:
  """The sweep's results table (writing the report if it is missing)."""
  path = os.path.join(sweep_dir, 'results.md')
  if not os.path.exists(path):
    report.write_report(sweep_dir)
  with open(path, encoding='utf-8') as f:
    return f.read()


def _q(label: str) -> str:
  """An arm's label quoted: labels hold commas ('naive, width 0.125')."""
  return f'"{label}"'


def _versus(c: stats.Comparison) -> str:
  """How an arm's accuracy stands against the reference's, in words."""
  if math.isnan(c.p_value):
    return 'has too few seeds to test its accuracy against it'
  d = f'{100 * c.diff:+.2f} points'
  ci = f'95% CI [{100 * c.ci_low:+.2f}, {100 * c.ci_high:+.2f}]'
  if c.significant:
    word = 'higher' if c.diff > 0 else 'lower'
    return f'has {word} accuracy ({d}, {ci})'
  return (f'is not distinguishable from it in accuracy at these seeds ({d}, '
          f'{ci} contains zero)')


def results_conclusion(all_arms: list[report.Arm]) -> str:
  """What the table says: each arm's cost and accuracy against the reference."""
  if not all_arms:
    return 'No run has finished yet: there is nothing to compare.'
  ref = report.reference_arm(all_arms) or all_arms[0]
  with warnings.catch_warnings():  # seeds with near-identical accuracies
    warnings.simplefilter('ignore', RuntimeWarning)
    comps = report.comparisons(all_arms, ref)
  s = ref.accuracy
  first = f'{_q(ref.label)} reaches {s.mean:.4f} final eval accuracy'
  if s.n > 1:
    first += (f' (mean of {s.n} seeds, 95% CI [{max(s.ci_low, 0):.4f}, '
              f'{min(s.ci_high, 1):.4f}])')
  parts = [first + '.']
  for arm, c in zip([a for a in all_arms if a is not ref], comps):
    parts.append(f'{_q(arm.label)} costs {arm.macs / ref.macs:.2f}x the '
                 f'multiply-adds per image of {_q(ref.label)} and '
                 f'{_versus(c)}.')
  return ' '.join(parts)


def _reaches(x, y, level: float):
  """The first x at which the curve y reaches ``level`` (None if never)."""
  hit = np.nonzero(np.asarray(y) >= level - 1e-9)[0]
  return float(x[hit[0]]) if len(hit) else None


def curves_conclusion(all_arms: list[report.Arm]) -> str:
  """Training FLOPs each arm's mean curve takes to reach the weakest arm's."""
  curves = []
  for arm in all_arms:
    x, mean, _ = stats.mean_band([r.curve('train_flops') for r in arm.runs])
    if len(x):
      curves.append((arm, x, mean))
  if not curves:
    return 'No run has an eval curve yet.'
  weakest = min(curves, key=lambda c: c[0].accuracy.mean)[0]
  level = weakest.accuracy.mean
  reached = [(arm, _reaches(x, mean, level)) for arm, x, mean in curves]
  ref = report.reference_arm(all_arms)
  ref_flops = next((f for arm, f in reached if arm is ref), None)
  said = []
  for arm, f in reached:
    if f is None:  # its mean curve is cut to its shortest seed's
      said.append(f'{_q(arm.label)} not within its mean curve')
    elif ref_flops and arm is not ref:
      said.append(f'{_q(arm.label)} {f:.3g} ({f / ref_flops:.2f}x '
                  f'{_q(ref.label)})')
    else:
      said.append(f'{_q(arm.label)} {f:.3g}')
  return (f'To reach {level:.4f} eval accuracy (the final mean of the weakest '
          f'arm, {_q(weakest.label)}), the mean curves take these training '
          'FLOPs: ' + '; '.join(said) + '.')


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


def macs_conclusion(macs) -> str:
  """What ``layer_macs`` says: the naive model's cost and where it grows."""
  names, a, b = macs
  ratios = [(y / x, n) for n, x, y in zip(names, a, b) if x and y != x]
  text = (f'Without its 1x1 reductions the model takes {sum(b) / sum(a):.1f}x '
          f'the multiply-adds per image ({sum(a):,} -> {sum(b):,}).')
  if ratios:
    most, where = max(ratios)
    text += (f' Per block, the naive variant takes {ratios[0][0]:.1f}x in '
             f'{ratios[0][1]}, the first that differs, and the most, '
             f'{most:.1f}x, in {where}.')
  return text


def plot_layer_macs(config, ax, macs=None):
  """Grouped bars: MACs per block, bottleneck against naive (log scale).

  ``macs`` is ``layer_macs(config)`` when already computed.
  """
  names, a, b = macs or layer_macs(config)
  x = np.arange(len(names))
  ax.bar(x - 0.2, a, 0.4, label='with 1x1 bottlenecks')
  ax.bar(x + 0.2, b, 0.4, label='naive (no reductions)')
  ax.set_xticks(x, names, rotation=60, ha='right')
  ax.set_yscale('log')
  ax.set_ylabel('MACs per image')
  ax.set_title(f'{config.model.name}: per-block MACs')
  ax.legend()


@contextlib.contextmanager
def _absl_errors_only():
  """Silences absl warnings (orbax's notes on a read-only checkpoint)."""
  level = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.ERROR)
  try:
    yield
  finally:
    absl_logging.set_verbosity(level)


def restore(run_dir: str, step: int | None = None):
  """``(experiment, state)`` of a run's latest (or ``step``) checkpoint."""
  with _absl_errors_only():
    return evaluate.restore_run(workdir.load_config(run_dir), run_dir, step)


def eval_batch(exp, state, n: int = 64) -> dict:
  """Images, labels and predictions of the first ``n`` eval examples."""
  batch = next(iter(data.eval_batches(exp.specs.data)))
  images, labels = batch['image'][:n], batch['label'][:n]
  logits = _apply(exp, state, images)
  preds = np.asarray(jnp.argmax(logits, -1))
  return {'images': images, 'labels': labels, 'predictions': preds,
          'accuracy': float(np.mean(preds == labels))}


def restore_conclusion(run: report.RunResult, batch: dict) -> str:
  """The batch's accuracy next to the run's recorded final eval accuracy."""
  n = len(batch['labels'])
  right = int(np.sum(batch['predictions'] == batch['labels']))
  text = (f'{_q(run.arm)} (seed {run.seed}) labels {right} of the first {n} '
          f'eval images correctly ({right / n:.1%}).')
  final = run.summary.get('final_eval_accuracy')
  if final is not None:
    split = run.config.get('eval_split', 'eval')
    text += (f' On its whole eval split ({split}) it recorded {final:.4f}: '
             f'{n} images are a small sample.')
  return text


def _apply(exp, state, images, **kwargs):
  """The model on ``images``, one op per layer (XLA's kernels).

  The layer-wise hooks here read each ConvBN's input and output, which a
  fused 1x1 GEMM (``Kernels.fuse_pointwise``) would not show; the XLA path computes
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


def plot_images(images, labels, class_names, axes, predictions=None):
  """A row of input images with their labels (and predictions, red if wrong)."""
  for i, (ax, img, label) in enumerate(zip(axes, images, labels)):
    ax.imshow(img.squeeze(), cmap='gray' if img.shape[-1] == 1 else None)
    title, color = f'label {class_names[label]}', 'black'
    if predictions is not None:
      title += f'\npredicted {class_names[predictions[i]]}'
      color = 'black' if predictions[i] == label else 'tab:red'
    ax.set_title(title, fontsize=8, color=color)
    ax.axis('off')


def plot_feature_maps(maps, axes, title: str, fig=None):
  """The first channels of one image's feature maps, one per axis.

  The row shares one colour scale, so channels compare by brightness; with
  ``fig``, a colourbar beside the row gives its values.
  """
  shown = maps[..., :len(axes)]
  lo, hi = float(shown.min()), float(shown.max())
  for i, ax in enumerate(axes):
    im = ax.imshow(maps[..., i], cmap='viridis', vmin=lo, vmax=hi)
    ax.set_title(f'{title} ch {i}', fontsize=7)
    ax.axis('off')
  if fig is not None:
    fig.colorbar(im, ax=list(axes), shrink=0.8, pad=0.01)


def maps_conclusion(maps: dict) -> str:
  """What one reduction does to its maps: zeros after ReLU, weight spread."""
  c_out, c_in = maps['weights'].shape
  k = min(3, c_in)
  w2 = np.sort(maps['weights'] ** 2, axis=1)[:, ::-1]
  top = float(np.mean(w2[:, :k].sum(1) / np.maximum(w2.sum(1), 1e-30)))
  zeros = float(np.mean(maps['after'] == 0))
  return (f'{maps["path"]} maps {c_in} channels to {c_out} at every pixel. '
          f'After BatchNorm and ReLU, {zeros:.0%} of its outputs on these '
          f'{len(maps["after"])} images are zero, and each output channel puts '
          f'{top:.0%} of its squared weights on its {k} largest inputs '
          f'({k / c_in:.0%} if spread evenly).')


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
  weights project onto, the same fraction for PCA at rank r, the most
  any rank-r linear projection can keep, and r / C_in, what a random rank-r
  subspace keeps on average. Every 1x1 layer with fewer outputs than inputs
  counts: GoogLeNet's ``*_reduce`` layers and its ``branch1x1`` and
  ``pool_proj`` layers where they are narrower than their input, NiN's cccp
  layers.

  Returns:
    One dict per reduction: ``path``, ``block`` (its first part), ``kind``
    (its last part, e.g. ``branch5x5_reduce``), ``c_in``, ``c_out``,
    ``singular_values``, and the fractions in [0, 1] ``kept``, ``pca_kept``
    and ``random_kept``.
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
                 'kind': path.split('/')[-1],
                 'c_in': w.shape[0], 'c_out': r, 'random_kept': r / w.shape[0],
                 'singular_values': np.linalg.svd(w, compute_uv=False),
                 'kept': _projection_kept(cov, w),
                 'pca_kept': float(eig[:r].sum() / eig.sum())})
  return rows


_KIND_LABELS = {'branch1x1': '1x1 branch', 'branch3x3_reduce': '3x3 reduce',
                'branch5x5_reduce': '5x5 reduce', 'pool_proj': 'pool proj'}


def _block_label(row) -> str:
  """'3a' for inception_3a/..., the path less its last part otherwise."""
  parts = row['path'].split('/')
  return '/'.join(parts[:-1] or parts).removeprefix('inception_')


def by_kind(rows) -> dict[str, list[dict]]:
  """``reduction_variance``'s rows grouped by layer kind, in model order."""
  groups = {}
  for r in rows:
    groups.setdefault(_KIND_LABELS.get(r['kind'], r['kind']), []).append(r)
  return groups


def variance_table(rows) -> str:
  """Markdown: kept / PCA-kept (C_in->C_out), blocks by row, kinds by column."""
  kinds = list(by_kind(rows))
  cells = {}
  for kind, group in by_kind(rows).items():
    for r in group:
      cells.setdefault(_block_label(r), {})[kind] = (
          f"{r['kept']:.3f} / {r['pca_kept']:.3f} ({r['c_in']}->{r['c_out']})")
  out = ['| block | ' + ' | '.join(kinds) + ' |',
         '|' + '---|' * (len(kinds) + 1)]
  out += [f'| {b} | ' + ' | '.join(c.get(k, '') for k in kinds) + ' |'
          for b, c in cells.items()]
  return '\n'.join(out)


def variance_conclusion(rows, n_images: int) -> str:
  """What the variance kept says: task-driven projections or compressions."""
  if not rows:
    return 'This model has no 1x1 layer with fewer outputs than inputs.'
  share = np.array([r['kept'] / r['pca_kept'] for r in rows])
  median = float(np.median(share))
  above_random = sum(r['kept'] > r['random_kept'] for r in rows)
  r = min(rows, key=lambda r: r['c_out'] / r['c_in'])  # the narrowest
  text = (f'On {n_images} eval images, the {len(rows)} trained reductions keep '
          f'a median {median:.0%} of the variance PCA keeps at the same rank '
          f'({int(np.sum(share < 0.5))} of {len(rows)} under half). The '
          f"narrowest, {_block_label(r)}'s "
          f"{_KIND_LABELS.get(r['kind'], r['kind'])} ({r['c_in']}->{r['c_out']}"
          f" channels), keeps {r['kept']:.3f} of its input's variance where "
          f"PCA keeps {r['pca_kept']:.3f} and a random rank-{r['c_out']} "
          f"subspace {r['random_kept']:.3f} on average; {above_random} of "
          f"{len(rows)} "
          'keep more than a random subspace of their rank.')
  if median < 0.75:
    text += (' So they are task-driven projections, not compressions: '
             "training keeps the directions the task needs and drops most of "
             "the input's variance.")
  else:
    text += (' So they stay close to PCA: here they act much like '
             'compressions of their input.')
  return text


def _panels(fig, n: int, cols: int):
  axes = fig.subplots(math.ceil(n / cols), min(n, cols), squeeze=False).ravel()
  for ax in axes[n:]:
    ax.axis('off')
  return axes[:n]


def plot_reduction_variance(rows, fig, cols: int = 2):
  """Variance kept per reduction, against PCA and random: a panel per kind.

  Each panel has one group of bars per block, so a reader compares the same
  layer through the depth of the network.
  """
  groups = by_kind(rows)
  for ax, (kind, group) in zip(_panels(fig, len(groups), cols), groups.items()):
    x = np.arange(len(group))
    for dx, key, label in ((-0.27, 'kept', 'trained 1x1 reduction'),
                           (0, 'pca_kept', 'PCA at the same rank (optimum)'),
                           (0.27, 'random_kept', 'random subspace (mean)')):
      ax.bar(x + dx, [r[key] for r in group], 0.27, label=label)
    ax.set_xticks(x, [f"{_block_label(r)}\n{r['c_in']}->{r['c_out']}"
                      for r in group], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel('fraction of input variance')
    ax.set_title(kind)
  fig.legend(*fig.axes[0].get_legend_handles_labels(), ncol=3,
             loc='outside lower center')
  fig.suptitle('What each trained 1x1 reduction keeps of its input')


def plot_singular_values(rows, fig, cols: int = 4):
  """Reduction weights' spectra: a panel per kind, a line per block.

  A block has one colour in every panel (darker is shallower), so one legend
  beside the panels names them all.
  """
  blocks = list(dict.fromkeys(_block_label(r) for r in rows))
  colors = dict(zip(blocks, matplotlib.colormaps['viridis'](
      np.linspace(0, 0.9, len(blocks)))))
  groups = by_kind(rows)
  handles = {}
  for ax, (kind, group) in zip(_panels(fig, len(groups), cols), groups.items()):
    for r in group:
      sv, block = r['singular_values'], _block_label(r)
      line, = ax.plot(np.arange(1, len(sv) + 1), sv / sv[0], marker='.',
                      color=colors[block])
      handles[block] = line
    ax.set_xlabel('singular value index (up to the rank)')
    ax.set_ylabel('singular value / largest')
    ax.set_ylim(0, 1.02)
    ax.set_title(kind)
    ax.grid(True, alpha=0.3)
  fig.legend([handles[b] for b in blocks], blocks, title='block',
             loc='outside right upper', fontsize='small')
  fig.suptitle('Spectra of the reduction weights, each over its largest')
