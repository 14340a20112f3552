"""Frontier sweeps' lr tuning: every family's grid grows by one rule, then the best is read."""
import json
import os

import pytest

from configs import inception_cifar
from configs.sweeps import cifar10_frontier
from inception.errors import UserError
from inception.sweeps import frontier, sweep


def test_a_grid_whose_best_is_inside_stays_as_it_is():
  assert frontier.lr_grid({0.1: 0.70, 0.2: 0.75, 0.4: 0.72}) == (0.1, 0.2, 0.4)


def test_a_grid_grows_past_a_winning_edge_until_the_best_is_inside():
  assert frontier.lr_grid({0.1: 0.70, 0.2: 0.75, 0.4: 0.76}) == (
      0.1, 0.2, 0.4, 0.8)
  assert frontier.lr_grid({0.1: 0.70, 0.2: 0.75, 0.4: 0.76, 0.8: 0.74}) == (
      0.1, 0.2, 0.4, 0.8)
  assert frontier.lr_grid({0.1: 0.74, 0.2: 0.73, 0.4: 0.6}) == (
      0.05, 0.1, 0.2, 0.4)
  # At most max_extensions (2) factors past an edge.
  assert frontier.lr_grid({0.1: 0.5, 0.2: 0.6, 0.4: 0.7, 0.8: 0.8,
                           1.6: 0.9}) == (0.1, 0.2, 0.4, 0.8, 1.6)


def test_a_grid_grows_only_once_every_point_is_trained():
  assert frontier.lr_grid({0.1: 0.70, 0.2: None, 0.4: 0.76}) == (0.1, 0.2, 0.4)
  assert frontier.lr_grid({}) == (0.1, 0.2, 0.4)


def test_ties_go_to_the_smaller_lr():
  assert frontier.lr_grid({0.1: 0.7, 0.2: 0.7, 0.4: 0.7}) == (
      0.05, 0.1, 0.2, 0.4)


def _finish(root, overrides, accuracy):
  run = os.path.join(root, cifar10_frontier.TUNING_DIR, sweep.run_name(overrides))
  os.makedirs(run)
  with open(os.path.join(run, 'summary.json'), 'w') as f:
    json.dump({'final_eval_accuracy': accuracy}, f)


def test_the_tuning_sweep_adds_the_grown_points_and_the_frontier_waits(
    tmp_path):
  config = inception_cifar.get_config('frontier')
  root = str(tmp_path)
  scores = {'bottleneck': {0.1: 0.76, 0.2: 0.784, 0.4: 0.786},
            'naive': {0.1: 0.74, 0.2: 0.73, 0.4: 0.72},
            'separable': {0.1: 0.70, 0.2: 0.72, 0.4: 0.71}}
  for family, lr, overrides in cifar10_frontier.tuning_runs(config, root):
    _finish(root, overrides, scores[family][lr])
  planned = {(f, lr) for f, lr, _ in cifar10_frontier.tuning_runs(config, root)}
  assert {(f, lr) for f, lr in planned if lr not in (0.1, 0.2, 0.4)} == {
      ('bottleneck', 0.8), ('naive', 0.05)}
  with pytest.raises(UserError, match='missing or unfinished'):
    cifar10_frontier.tuned_learning_rates(config, root)
  for family, lr, overrides in cifar10_frontier.tuning_runs(config, root):
    if lr in (0.8, 0.05):
      _finish(root, overrides, 0.70)
  assert cifar10_frontier.tuned_learning_rates(config, root) == {
      'bottleneck': 0.4, 'naive': 0.1, 'separable': 0.2}


def test_the_nin_ablation_is_a_frontier_of_two_families_at_equal_macs(
    tmp_path):
  from configs import nin_cifar  # pylint: disable=g-import-not-at-top
  from configs.sweeps import nin_ablation  # pylint: disable=g-import-not-at-top
  from inception.models import budget  # pylint: disable=g-import-not-at-top
  config = nin_cifar.get_config('ablation')
  root = str(tmp_path)
  tuning = nin_ablation.tuning_runs(config, root)
  assert [(f, lr) for f, lr, _ in tuning] == [
      (f, lr) for f in ('mlpconv', 'plain') for lr in (0.1, 0.2, 0.4)]
  for family, lr, overrides in tuning:
    run = os.path.join(root, nin_ablation.TUNING_DIR, sweep.run_name(overrides))
    os.makedirs(run)
    with open(os.path.join(run, 'summary.json'), 'w') as f:
      json.dump({'final_eval_accuracy': {0.1: 0.7, 0.2: 0.8, 0.4: 0.75}[lr]},
                f)
  assert nin_ablation.tuned_learning_rates(config, root) == {
      'mlpconv': 0.2, 'plain': 0.2}
  runs = nin_ablation.FRONTIER.final_runs(config, root)
  assert len(runs) == 2 * 2 * 3 + 2 * 3  # families x widths x seeds + long
  macs = lambda r: budget.macs('nin_cifar', (32, 32, 3),
                               bottleneck=r['model.bottleneck'],
                               width=r['model.width'])
  main, long = runs[:12], runs[12:]
  assert all('num_epochs' not in r for r in main)
  # The long runs: both families at their cheapest width, 16 epochs.
  assert [(r['model.width'], r['num_epochs']) for r in long] == [
      (0.125, 16), (main[1]['model.width'], 16)] * 3
  for mlpconv, plain in zip(main[::2], main[1::2]):
    assert mlpconv['model.bottleneck'] and not plain['model.bottleneck']
    assert plain['model.width'] < mlpconv['model.width']
    assert abs(macs(plain) / macs(mlpconv) - 1) < budget.TOLERANCE
    assert plain['train_split'] == 'train[:90%]' == mlpconv['train_split']


def test_the_accelerator_frontier_overlaps_its_families_up_to_width_half(
    tmp_path):
  """Three widths per family whose MACs overlap (bottleneck, naive at equal
  MACs, separable one step wider), tuned in a folder of its own."""
  from configs.sweeps import cifar10_frontier_accelerator as accelerator  # pylint: disable=g-import-not-at-top
  from inception.models import budget  # pylint: disable=g-import-not-at-top
  config = inception_cifar.get_config('frontier')
  root = str(tmp_path)
  assert accelerator.TUNING_DIR != cifar10_frontier.TUNING_DIR
  for family, lr, overrides in accelerator.tuning_runs(config, root):
    run = os.path.join(root, accelerator.TUNING_DIR, sweep.run_name(overrides))
    os.makedirs(run)
    with open(os.path.join(run, 'summary.json'), 'w') as f:
      json.dump({'final_eval_accuracy': {0.1: 0.7, 0.2: 0.8, 0.4: 0.75}[lr]},
                f)
  runs = accelerator.FRONTIER.final_runs(config, root)
  assert len(runs) == 3 * 3 * 3 + 2 * 3  # families x widths x seeds + long
  macs = lambda r: budget.macs(
      'googlenet_cifar', (32, 32, 3), bottleneck=r['model.bottleneck'],
      pool_proj=r['model.pool_proj'], separable=r['model.separable'],
      width=r['model.width'])
  seed0 = runs[:9]  # width by width: bottleneck, naive, separable
  for i in range(3):
    bottleneck, naive, separable = (macs(r) for r in seed0[3 * i:3 * i + 3])
    assert abs(naive / bottleneck - 1) < budget.TOLERANCE
    assert 0.85 < separable / bottleneck < 1.0
  assert max(r['model.width'] for r in runs) == 0.75
  assert {r['learning_rate'] for r in runs} == {0.2}
