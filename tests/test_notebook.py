"""notebooks/analysis.ipynb and inception.sweeps.analysis: modes, sentences, figures.

The notebook runs headless (nbclient) on the published results (no
checkpoints) and on its default sweep; tests/test_sweep.py runs it on a
generated sweep with checkpoints. The rest draws and words synthetic data.
"""
import json
import os

import nbclient
import nbformat
import numpy as np
from matplotlib.figure import Figure

from conftest import REPO
from inception.sweeps import analysis, plots, report

CONCLUSION = '**In short:**'


def execute_notebook(cwd: str, sweep_dir: str | None):
  """Runs the notebook from ``cwd``; returns (images, outputs as JSON text)."""
  nb = nbformat.read(os.path.join(REPO, 'notebooks', 'analysis.ipynb'), 4)
  saved = os.environ.pop(analysis.SWEEP_ENV, None)
  if sweep_dir:
    os.environ[analysis.SWEEP_ENV] = sweep_dir
  try:
    nbclient.NotebookClient(nb, timeout=600, kernel_name='python3',
                            resources={'metadata': {'path': cwd}}).execute()
  finally:
    os.environ.pop(analysis.SWEEP_ENV, None)
    if saved is not None:
      os.environ[analysis.SWEEP_ENV] = saved
  outputs = [o for c in nb.cells if c.cell_type == 'code'
             for o in c.get('outputs', [])]
  assert not [o for o in outputs if o.get('output_type') == 'error']
  images = [o for o in outputs if 'image/png' in o.get('data', {})]
  text = json.dumps(outputs)
  assert 'skipped' not in text.lower()
  return images, text


def assert_full_analysis(images, text):
  """Every section drew and said what its numbers say (a sweep with weights)."""
  # pareto+curves, MACs, inputs, variance kept, spectra, maps, weights
  assert len(images) >= 7
  assert text.count(CONCLUSION) == 6
  assert 'Trained weights:' in text and 'eval images correctly' in text
  assert 'of the variance PCA keeps at the same rank' in text
  assert 'at every pixel' in text


def test_notebook_shows_the_published_results_without_skipping():
  """From notebooks/, on results/cifar10_ablation: tables, curves, no noise."""
  images, text = execute_notebook(os.path.join(REPO, 'notebooks'),
                                  analysis.PUBLISHED_SWEEP)
  assert len(images) == 2  # pareto+curves, MACs: nothing needs weights
  assert text.count(CONCLUSION) == 3
  assert text.count('has checkpoints') == 1  # one note, in the first cell
  assert 'has lower accuracy' in text and 'contains zero' in text
  assert 'better' not in text
  assert '"name": "stderr"' not in text


def test_notebook_default_is_the_demo_sweep_or_says_how_to_make_it(
    monkeypatch):
  """With no setting it analyses runs/demo, else the published results.

  Without runs/demo (a fresh clone) the notebook would run as in
  ``test_notebook_shows_the_published_results_without_skipping``: only the
  choice of sweep is checked here.
  """
  if not os.path.isdir(os.path.join(REPO, 'runs', 'demo')):
    monkeypatch.delenv(analysis.SWEEP_ENV, raising=False)
    sweep = analysis.open_sweep()
    assert sweep.path == analysis.PUBLISHED_SWEEP and sweep.run is None
    assert '`make demo` creates it' in sweep.note
    return
  images, text = execute_notebook(os.path.join(REPO, 'notebooks'), None)
  assert 'the demo sweep' in text
  assert_full_analysis(images, text)
  assert '3a' in text and '5x5 reduce' in text  # grouped by block and kind


def test_without_the_demo_it_falls_back_to_the_published_results(
    tmp_path, monkeypatch):
  monkeypatch.delenv(analysis.SWEEP_ENV, raising=False)
  sweep = analysis.open_sweep(default=str(tmp_path / 'demo'))
  assert sweep.path == analysis.PUBLISHED_SWEEP and sweep.run is None
  assert '`make demo` creates it' in sweep.note and len(sweep.arms) == 4
  assert 'left out' in sweep.note and 'skipped' not in sweep.note


def _arm_runs(label, kind, accuracies, macs=1000):
  """Finished runs of one arm with an eval curve ending at each accuracy."""
  return [report.RunResult(
      f'{label}{seed}', '', {'arm': label, 'seed': seed}, 'done',
      {'step': 2, 'macs': macs, 'final_eval_accuracy': a, 'seed': seed},
      {'batch_size': 1}, [{'step': 1, 'eval/accuracy': a / 2},
                          {'step': 2, 'eval/accuracy': a}], arm=label,
      kind=kind) for seed, a in enumerate(accuracies)]


def _arms(*specs):
  return report.arms([r for spec in specs for r in _arm_runs(*spec)])


def test_conclusions_never_call_an_interval_with_zero_a_difference():
  arms = _arms(('bottleneck', 'bottleneck', [0.99, 1.0]),
               ('naive', 'naive', [1.0, 0.98, 0.995], 10_000))
  text = analysis.results_conclusion(arms)
  assert 'not distinguishable' in text and 'contains zero' in text
  assert '10.00x the multiply-adds' in text
  assert not {'better', 'higher', 'lower'} & set(text.split())
  assert '1.0000]' in text  # the arm's interval, clipped to accuracy's range
  clear = analysis.results_conclusion(_arms(
      ('bottleneck', 'bottleneck', [0.90, 0.91, 0.92]),
      ('naive', 'naive', [0.70, 0.71, 0.72])))
  assert '"naive" costs 1.00x' in clear and 'has lower accuracy' in clear
  curves = analysis.curves_conclusion(arms)
  assert 'To reach 0.9917' in curves and '(10.00x "bottleneck")' in curves


def test_variance_sentence_and_figures_on_googlenet_like_rows():
  kinds = ('branch1x1', 'branch3x3_reduce', 'branch5x5_reduce', 'pool_proj')
  blocks = ('3a', '3b', '4a', '4b', '4c', '4d', '4e', '5a', '5b')
  rng = np.random.default_rng(0)
  rows = [{'path': f'inception_{b}/{k}', 'block': f'inception_{b}', 'kind': k,
           'c_in': 24, 'c_out': 2 + i, 'kept': 0.1 + 0.01 * i,
           'pca_kept': 0.5 + 0.01 * i, 'random_kept': (2 + i) / 24,
           'singular_values': np.sort(rng.random(2 + i))[::-1]}
          for b in blocks for i, k in enumerate(kinds)]
  text = analysis.variance_conclusion(rows, 64)
  assert 'task-driven projections, not compressions' in text
  assert "3a's 1x1 branch (24->2 channels), keeps 0.100" in text
  assert '36 of 36 under half' in text
  table = analysis.variance_table(rows)
  assert table.count('\n') == 10 and '0.100 / 0.500 (24->2)' in table
  fig = Figure(figsize=(13, 7), layout='constrained')
  analysis.plot_reduction_variance(rows, fig)
  assert len(fig.axes) == 4 and fig.legends
  for ax in fig.axes:
    assert len(ax.get_xticklabels()) <= 12 and ax.get_title() in (
        '1x1 branch', '3x3 reduce', '5x5 reduce', 'pool proj')
  fig = Figure(figsize=(14, 3.6), layout='constrained')
  analysis.plot_singular_values(rows, fig)
  assert len(fig.axes) == 4 and len(fig.axes[0].get_lines()) == 9
  assert [t.get_text() for t in fig.legends[0].get_texts()] == list(blocks)


def test_feature_maps_have_colourbars_and_a_sentence():
  maps = {'path': 'inception_3a/branch3x3_reduce',
          'before': np.arange(2 * 4 * 4 * 6.).reshape(2, 4, 4, 6),
          'after': np.maximum(np.arange(-16., 16.).reshape(2, 4, 4, 1), 0),
          'weights': np.array([[4., 0, 0, 0, 0, 0]])}
  fig = Figure(layout='constrained')
  axes = fig.subplots(1, 3)
  analysis.plot_feature_maps(maps['before'][0], axes, 'in', fig)
  assert len(fig.axes) == 4  # three maps and their row's colourbar
  text = analysis.maps_conclusion(maps)
  assert 'maps 6 channels to 1' in text and '53% of its outputs' in text
  assert '100% of its squared weights on its 3 largest' in text


def _segments_y(ax):
  """The y values of every error bar drawn on ``ax``."""
  return np.concatenate([np.asarray(seg)[:, 1] for c in ax.collections
                         if hasattr(c, 'get_segments')
                         for seg in c.get_segments()])


def test_accuracy_intervals_and_bands_are_clipped_to_0_1():
  """Seeds near 1.0 (and near 0) have t intervals past accuracy's range."""
  arms = _arms(('bottleneck', 'bottleneck', [0.99, 1.0]),
               ('naive', 'naive', [0.0, 0.03], 10_000))
  assert arms[0].accuracy.ci_high > 1 and arms[1].accuracy.ci_low < 0
  fig = Figure()
  ax = fig.subplots()
  plots.plot_pareto(arms, ax=ax)
  fig.canvas.draw()
  y = _segments_y(ax)
  assert y.max() == 1.0 and y.min() == 0.0
  assert ax.get_ylim()[1] <= 1.0 and ax.get_ylim()[0] >= 0.0
  caps = [line.get_ydata() for c in ax.containers for line in c.lines[1]]
  assert np.max(caps) <= 1.0 and np.min(caps) >= 0.0
  ax = Figure().subplots()
  plots.plot_curves(_arms(('bottleneck', 'bottleneck', [0.9, 1.0, 1.0])),
                    ax=ax)
  bands = np.concatenate([p.vertices[:, 1] for c in ax.collections
                          for p in c.get_paths()])
  assert bands.max() <= 1.0 and ax.get_ylim()[1] <= 1.0
