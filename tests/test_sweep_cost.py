"""A sweep's cost before it runs: steps, training FLOPs, measured images/s."""
import os
import subprocess

import pytest

from conftest import REPO, TINY_MACS, cli_overrides, quick_config, run_cli
from inception.sweeps import sweep, cost as sweep_cost
from inception.training import loop, specs, workdir
from test_sweep import SWEEP, _write


def _runs(workdir):
  return sweep.plan(str(workdir), [{'seed': 0}, {'seed': 1}])


def test_cost_counts_steps_and_flops_and_reuses_a_measured_rate(tmp_path):
  config = quick_config()
  costs = sweep_cost.estimate(config, _runs(tmp_path), [str(tmp_path)])
  steps = config.num_train_steps
  assert [c.steps for c in costs] == [steps, steps]
  assert all(c.images == steps * config.batch_size for c in costs)
  assert all(c.train_flops == 6 * TINY_MACS * c.images for c in costs)
  assert all(c.images_per_s is None and c.seconds is None for c in costs)
  lines = sweep_cost.format_costs(costs)
  assert lines[-1].startswith('2 run(s) to go: ')
  assert '2 run(s) not measured (pass --time_steps=N' in lines[-1]
  # A finished run of the same shapes prices the other one, and is not
  # priced itself.
  first = _runs(tmp_path)[0]
  loop.train_and_evaluate(quick_config(seed=0), first.workdir)
  costs = sweep_cost.estimate(config, _runs(tmp_path), [str(tmp_path)])
  assert [c.name for c in costs] == ['seed=1']
  assert costs[0].images_per_s > 0
  assert costs[0].rate_from == 'measured by seed=0'
  assert costs[0].seconds == pytest.approx(
      costs[0].images / costs[0].images_per_s)
  assert ' h one run at a time' in sweep_cost.format_costs(costs)[-1]


def test_cost_times_unmeasured_shapes_when_asked(tmp_path):
  timed = []
  costs = sweep_cost.estimate(quick_config(), _runs(tmp_path), [],
                              time_steps=2, echo=timed.append)
  assert len(timed) == 1  # both seeds share one shape: timed once
  assert all(c.rate_from == 'timed here' and c.images_per_s > 0
             for c in costs)


def test_dry_run_prints_the_cost_and_refuses_a_bad_time_steps(tmp_path):
  path = _write(tmp_path / 'seeds.py', 'def get_sweep(config):\n'
                '  return [{"seed": 0}, {"seed": 1}]\n')
  cmd = SWEEP + ['--sweep', path, '--workdir', str(tmp_path / 'w'),
                 '--dry_run', *cli_overrides()]
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  costs = [l for l in out.stdout.splitlines() if l.startswith('# cost ')]
  assert len(costs) == 2 and 'training FLOPs' in costs[0]
  assert '# 2 run(s) to go: ' in out.stdout
  assert not os.path.exists(tmp_path / 'w')
  out = subprocess.run(cmd + ['--time_steps=-1'], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines()[-1] == (
      'error: --time_steps must be 0 or more, got -1')


def test_runs_sharing_a_program_start_after_it_compiled(tmp_path):
  """--parallel: a seed waits for the first seed's compile; other lrs don't."""
  runs = sweep.plan(str(tmp_path), [{'seed': 0}, {'seed': 1},
                                    {'learning_rate': 0.02}])
  lines = []
  warm_up = sweep._WarmUp(sweep.program_key(quick_config()), lines.append)  # pylint: disable=protected-access
  queue = list(runs)
  first, other = warm_up.pick(queue), warm_up.pick(queue)
  assert (first.name, other.name) == ('seed=0', 'learning_rate=0.02')
  assert warm_up.pick(queue) is None  # seed=1 waits for seed=0's compile
  active = {first.name: first, other.name: other}
  warm_up.poll(active)
  assert warm_up.pick(queue) is None  # nothing logged yet
  os.makedirs(first.workdir)
  with open(os.path.join(first.workdir, 'metrics.jsonl'), 'w') as f:
    f.write('{"step": 1, "train/loss": 2.3}\n')
  warm_up.poll(active)
  assert warm_up.pick(queue).name == 'seed=1' and not queue
  assert lines == ['compiled seed=0: its program is cached for the runs that '
                   'share it']
  # A first run that ends before logging a step frees its program too.
  runs = sweep.plan(str(tmp_path / 'b'), [{'seed': 0}, {'seed': 1}])
  queue = list(runs)
  warm_up = sweep._WarmUp(sweep.program_key(quick_config()), lines.append)  # pylint: disable=protected-access
  assert warm_up.pick(queue).name == 'seed=0' and warm_up.pick(queue) is None
  warm_up.poll({})
  assert warm_up.pick(queue).name == 'seed=1'


def test_a_split_that_cannot_be_counted_here_is_listed_unpriced(tmp_path):
  config = quick_config(dataset=f'folder:{tmp_path / "absent"}')
  costs = sweep_cost.estimate(config, _runs(tmp_path), [])
  assert [c.steps for c in costs] == [None, None]
  assert sweep_cost.format_costs(costs) == [
      '0 run(s) to go: 0 training FLOPs; 2 run(s) not priced (their train '
      'split cannot be counted here)']


def test_sweep_speed_times_each_finished_shape_side_by_side(tmp_path):
  """benchmarks/sweep_speed.py: one arm per step shape, rounds interleaved."""
  root = tmp_path / 'sweep'
  for name, overrides in (('a', {'seed': 0}), ('b', {'seed': 1}),
                          ('c', {'seed': 0, 'batch_size': 4})):
    # A finished run, as far as the script reads it: what training writes.
    os.makedirs(root / name)
    workdir.write_json(str(root / name / workdir.CONFIG),
                       specs.read(quick_config(**overrides)).identity)
    workdir.write_json(str(root / name / workdir.SUMMARY), {'status': 'done'})
  os.makedirs(root / 'unfinished')
  out = run_cli('benchmarks/sweep_speed.py', str(root), '--steps', '2',
                '--rounds', '3')
  assert out.returncode == 0, out.stderr[-2000:]
  speed = workdir.read_json(str(root / sweep_cost.SPEED_FILE))
  assert [a['run'] for a in speed['arms']] == ['a', 'c']  # b: a's shape
  assert all(len(a['rounds_images_per_s']) == 3 and a['images_per_s'] > 0
             for a in speed['arms'])
  assert speed['cpu'] and speed['num_steps'] == 2
  read = sweep_cost.read_speed(str(root))
  assert set(read['rates']) == {a['key'] for a in speed['arms']}
  bad = run_cli('benchmarks/sweep_speed.py', str(root / 'unfinished'))
  assert bad.returncode == 1
  assert bad.stderr.strip().splitlines() == [
      f'error: {root / "unfinished"} has no finished run to time; train its '
      'sweep first']
