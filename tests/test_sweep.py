"""Sweeps: axes, names, rerun checks, runner, Ctrl-C, kill, report, notebook."""
import csv
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

from conftest import (CONFIG, REPO, TINY_MACS, cli_overrides, quick_config,
                      record_steps)
from inception.sweeps import report, sweep
from inception.errors import UserError
from test_notebook import assert_full_analysis, execute_notebook

SWEEP = [sys.executable, 'sweep.py', '--config', CONFIG]


def _write(path, text):
  with open(path, 'w', encoding='utf-8') as f:
    f.write(text)
  return str(path)


def test_product_zip_chain():
  a = sweep.axis('model.bottleneck', [True, False])
  s = sweep.axis('seed', [0, 1])
  assert sweep.product(a, s) == [
      {'model.bottleneck': True, 'seed': 0}, {'model.bottleneck': True, 'seed': 1},
      {'model.bottleneck': False, 'seed': 0}, {'model.bottleneck': False, 'seed': 1}]
  assert sweep.zip(a, s) == [{'model.bottleneck': True, 'seed': 0},
                             {'model.bottleneck': False, 'seed': 1}]
  assert sweep.chain(a, s) == a + s
  with pytest.raises(ValueError):
    sweep.zip(a, sweep.axis('seed', [0]))


def test_shipped_sweeps_load_and_name_their_runs(tmp_path):
  from configs import quickstart  # pylint: disable=g-import-not-at-top
  config = quickstart.get_config()  # GoogLeNet: three ablation variants
  runs = sweep.plan(str(tmp_path), sweep.load_sweep(
      'configs/sweeps/bottleneck_ablation.py', config))
  assert len(runs) == 9 and len({r.name for r in runs}) == 9
  assert runs[-1].name == 'bottleneck=False,pool_proj=False,seed=2'
  equal = sweep.load_sweep('configs/sweeps/equal_macs.py', config)
  assert len(equal) == 6


def test_equal_macs_width_is_within_5_percent():
  from configs.sweeps import equal_macs  # pylint: disable=g-import-not-at-top
  from configs import inception_cifar  # pylint: disable=g-import-not-at-top
  width, naive, target = equal_macs.equal_macs_width(
      inception_cifar.get_config('cpu'))
  assert width < 0.125 and abs(naive - target) <= 0.05 * target


def test_dry_run_prints_plain_commands_and_keeps_metacharacters(tmp_path):
  value = "/tmp/x; touch pwned $(id) 'q' \"dq\" `uname`"
  path = _write(tmp_path / 'meta.py',
                f'def get_sweep(config):\n  return [{{"data_dir": {value!r}}}]\n')
  out = subprocess.run(SWEEP + ['--sweep', path, '--workdir',
                                str(tmp_path / 'w'), '--dry_run'],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  lines = [l for l in out.stdout.splitlines() if 'inception.cli.train' in l]
  assert len(lines) == 1
  argv = shlex.split(lines[0])
  assert argv[1:3] == ['-m', 'inception.cli.train']
  assert f'--config.data_dir={value}' in argv
  assert os.path.isabs(argv[argv.index('--config') + 1])
  assert not os.path.exists(tmp_path / 'w')


FAILING = {'learning_rate': 1e30, 'warmup_epochs': 0.0}


@pytest.fixture(scope='module')
def seed_sweep(tmp_path_factory):
  """Two seeds and a diverging run; the runner is killed with -9 once.

  The overrides carry shell metacharacters, which must reach the config
  as written.
  """
  tmp = tmp_path_factory.mktemp('sweep')
  value = "/tmp/$(touch pwned); echo 'hi'"
  path = _write(tmp / 'seeds.py', (
      'from inception.sweeps import sweep\n'
      'def get_sweep(config):\n'
      f'  return sweep.product(sweep.axis("seed", [0, 1]),'
      f' [{{"data_dir": {value!r}}}]) + [{FAILING!r}]\n'))
  workdir = str(tmp / 'w')
  cmd = SWEEP + ['--sweep', path, '--workdir', workdir, *cli_overrides()]
  runner = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
  second = os.path.join(workdir, sweep.run_name({'seed': 1, 'data_dir': value}))
  deadline = time.time() + 300
  while time.time() < deadline and not record_steps(second, 'train/loss'):
    time.sleep(0.05)
  runner.send_signal(signal.SIGKILL)  # its training child gets SIGTERM
  runner.wait()
  time.sleep(1)
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                       timeout=600)
  return workdir, out, value


def test_killed_sweep_completes_every_run_exactly_once(seed_sweep):
  workdir, out, _ = seed_sweep
  assert out.returncode == 1, out.stderr[-3000:]  # one run failed
  runs = report.load_runs(workdir)
  assert [r.status for r in runs] == ['done', 'done', 'failed']
  for r in runs[:2]:
    assert record_steps(r.workdir, 'train/loss') == list(range(1, 9))
    assert record_steps(r.workdir, 'eval/accuracy') == [8]
  assert 'run(s) already done, skipped' in out.stdout


def test_failed_run_is_recorded_and_others_finish(seed_sweep):
  workdir, out, _ = seed_sweep
  failed = {r.name: r for r in report.load_runs(workdir)}[
      sweep.run_name(FAILING)]
  assert failed.status == 'failed' and 'became nan' in failed.error
  assert '1 run(s) failed' in out.stdout
  with open(os.path.join(workdir, 'results.md'), encoding='utf-8') as f:
    assert '## Failed runs' in f.read()


def test_override_with_shell_metacharacters_reaches_the_config(seed_sweep):
  workdir, _, value = seed_sweep
  for r in report.load_runs(workdir)[:2]:
    assert r.config['data_dir'] == value
  assert not os.path.exists(os.path.join(REPO, 'pwned'))


def test_report_files(seed_sweep):
  workdir, out, _ = seed_sweep
  with open(os.path.join(workdir, 'results.csv'), encoding='utf-8') as f:
    rows = list(csv.DictReader(f))
  assert [r['status'] for r in rows] == ['done', 'done', 'failed']
  assert [r['seed'] for r in rows[:2]] == ['0', '1']
  assert all(int(r['macs']) == TINY_MACS and float(r['final_accuracy']) >= 0
             for r in rows[:2])
  with open(os.path.join(workdir, 'results.md'), encoding='utf-8') as f:
    md = f.read()
  assert '## Mean ± std over seeds' in md and '| 2 |' in md
  for name in ('pareto.png', 'curves.png', 'time.png'):
    with open(os.path.join(workdir, name), 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  assert 'pareto.png' in out.stdout and 'results.md' in out.stdout
  again = subprocess.run([sys.executable, '-m', 'inception.cli.report', workdir],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
  assert again.returncode == 0 and '| run |' in again.stdout


def test_sweep_rejects_bad_override_type(tmp_path):
  path = _write(tmp_path / 'bad.py',
                'def get_sweep(config):\n  return [{"batch_size": "big"}]\n')
  with pytest.raises(UserError, match='batch_size=.big. is a str but the '
                     'field is a int'):
    sweep.load_sweep(path, quick_config())


def test_notebook_analyses_a_sweep_with_checkpoints(seed_sweep):
  """notebooks/analysis.ipynb executes headless: every section, no 'skipped'.

  The sweep has a failed run, which the tables list and the analysis leaves
  out; tests/test_notebook.py runs it on the published results.
  """
  images, text = execute_notebook(REPO, seed_sweep[0])
  assert_full_analysis(images, text)
  assert 'mlpconv1' in text  # NiN's cccp reductions, grouped by block


def test_ablation_sweep_describes_every_arm_before_training():
  """The dry run shows each arm's branch widths and MACs against the first."""
  from configs import inception_cifar  # pylint: disable=g-import-not-at-top
  config = inception_cifar.get_config('cpu')
  runs = sweep.plan('/nonexistent', sweep.load_sweep(
      'configs/sweeps/cifar10_ablation.py', config))
  assert len(runs) == 20  # 5 seeds x 4 arms
  lines = sweep.describe_arms(config, runs)
  assert len(lines) == 4
  assert '1.000x the target' in lines[0] and '3a branches 8/12/16/2/4/4' in lines[0]
  equal = lines[1]
  ratio = float(equal.split('x the target')[0].rsplit('(', 1)[1])
  assert abs(ratio - 1) <= 0.05 and 'DEGENERATE' in equal
  assert 'separable=True' in lines[2]
  # The costly same-widths reference trains after every comparison run.
  assert [r.overrides['model.width'] for r in runs[-5:]] == [0.125] * 5
  assert not any(r.overrides['model.bottleneck'] for r in runs[-5:])


def _flag_values(args):
  """The sweep command's flags, parsed from ``args`` by absl (not globally)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  argv = ['sweep.py', *args]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', flag_values=values,
                                  lock_config=True, sys_argv=argv)
  flags.DEFINE_string('workdir', None, '', flag_values=values)
  flags.DEFINE_integer('parallel', 1, '', flag_values=values)
  flags.DEFINE_bool('dry_run', False, '', flag_values=values)
  values(argv)
  return values, argv


@pytest.mark.parametrize('args, expected', [
    (['--config.num_train_steps=5', '--config.data_dir', '/some/dir',
      '--config.seed=3'],
     ['--config.num_train_steps=5', '--config.data_dir=/some/dir',
      '--config.seed=3']),
    (['--config.model.bottleneck', '--noconfig.eval_flip', '-config.seed=2',
      '--dry_run', '--parallel', '2'],
     ['--config.model.bottleneck=true', '--config.eval_flip=false',
      '--config.seed=2']),
    # Another flag's value, and a value that looks like a flag: as absl.
    (['--workdir', '--config.seed=9', '--config.data_dir', '--config.seed=1'],
     ['--config.data_dir=--config.seed=1']),
    (['--config.seed', '4', '--', '--config.seed=5'], ['--config.seed=4']),
    (['--config.model.width', '0.5', '--config.model.width=2'],
     ['--config.model.width=0.5', '--config.model.width=2']),
])
def test_shared_overrides_are_read_as_absl_reads_them(args, expected):
  """Every run resolves exactly the config the sweep process parsed."""
  from inception.cli import sweep as sweep_main  # pylint: disable=g-import-not-at-top
  values, argv = _flag_values(['--config', CONFIG, *args])
  extra = sweep_main.shared_overrides(argv, values)
  assert extra == expected
  assert (sweep.resolve_config(CONFIG, extra).to_dict() ==
          values.config.to_dict())


def test_dry_run_keeps_spaced_overrides_and_expands_the_workdir(tmp_path):
  """``--config.k v`` reaches every run whole; ``~`` is the home folder."""
  path = _write(tmp_path / 'seeds.py',
                'def get_sweep(config):\n  return [{"seed": 0}, {"seed": 1}]\n')
  home = tmp_path / 'home'
  home.mkdir()
  out = subprocess.run(
      SWEEP + ['--sweep', path, '--workdir=~/sw', '--dry_run',
               '--config.num_train_steps=5', '--config.data_dir', '/some/dir'],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env={**os.environ, 'HOME': str(home)})
  assert out.returncode == 0, out.stderr[-2000:]
  commands = [shlex.split(l) for l in out.stdout.splitlines()
              if 'inception.cli.train' in l]
  assert len(commands) == 2
  for seed, argv in enumerate(commands):
    workdir = argv[argv.index('--workdir') + 1]
    assert workdir == str(home / 'sw' / f'seed={seed}')
    overrides = [a for a in argv if a.startswith('--config.')]
    assert overrides == ['--config.num_train_steps=5',
                         '--config.data_dir=/some/dir', f'--config.seed={seed}']
  assert not os.path.exists(os.path.join(REPO, '~'))
  assert not os.path.exists(home / 'sw')  # a dry run writes nothing


PUBLISHED = os.path.join(REPO, 'results', 'cifar10_ablation')
ABLATION = [sys.executable, 'sweep.py', '--config',
            'configs/inception_cifar.py:ablation', '--sweep',
            'configs/sweeps/cifar10_ablation.py', '--dry_run',
            '--config.dataset=folder:/tmp/cifar10']  # the Makefile's


def _fresh_copy(tmp_path, runs=()):
  """The published ablation's manifest (and ``runs``' records) elsewhere."""
  import shutil  # pylint: disable=g-import-not-at-top
  copy = tmp_path / 'ablation'
  copy.mkdir(parents=True)
  shutil.copy(os.path.join(PUBLISHED, 'sweep.json'), copy)
  for name in runs:
    shutil.copytree(os.path.join(PUBLISHED, name), copy / name)
  return str(copy)


def _ablation_plan(workdir, overrides, *extra):
  """check_rerun's arguments for the Makefile's ablation plus ``extra``."""
  config_arg = os.path.join(REPO, 'configs', 'inception_cifar.py') + ':ablation'
  extra = ['--config.dataset=folder:/tmp/cifar10', *extra]
  config = sweep.resolve_config(config_arg, extra)
  return config_arg, extra, sweep.plan(workdir, overrides), config


def test_make_ablation_reruns_the_published_sweep_from_a_fresh_clone(tmp_path):
  """``:ablation`` resolves to what ran, though the manifest says ``:cpu``."""
  first = 'bottleneck=True,pool_proj=True,separable=False,width=0.125,seed=0'
  bare, with_run = _fresh_copy(tmp_path / 'a'), _fresh_copy(tmp_path / 'b',
                                                             [first])
  # The Makefile's command, in another folder than the published one.
  procs = [subprocess.Popen(ABLATION + ['--workdir', bare] + more, cwd=REPO,
                            text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
           for more in ([], ['--config.num_epochs', '5'])]
  # Meanwhile, against the published run's own config.json: every field.
  # (The manifest lists the runs the sweep file plans; the dry run plans
  # them from the file.)
  with open(os.path.join(PUBLISHED, 'sweep.json'), encoding='utf-8') as f:
    overrides = [e['overrides'] for e in json.load(f)['runs']]
  for workdir in (bare, with_run):
    sweep.check_rerun(workdir, *_ablation_plan(workdir, overrides))
  with pytest.raises(UserError, match=r'learning_rate: 0.3 -> 0.5 in 1 '
                     r'trained run\(s\), e\.g\. ' + re.escape(first)):
    sweep.check_rerun(with_run, *_ablation_plan(
        with_run, overrides, '--config.learning_rate=0.5'))
  # Cadence fields do not change the result: a rerun may change them.
  sweep.check_rerun(with_run, *_ablation_plan(
      with_run, overrides, '--config.checkpoint_every_steps=50'))
  # The manifest's own spelling under today's code: its runs ran otherwise.
  cpu = os.path.join(REPO, 'configs', 'inception_cifar.py') + ':cpu'
  extra = ['--config.dataset=folder:/tmp/cifar10', '--config.num_epochs=4',
           '--config.eval_every_epochs=0.5']
  with pytest.raises(UserError, match='batch_size: 256 -> 128'):
    sweep.check_rerun(with_run, cpu, extra, sweep.plan(with_run, overrides),
                      sweep.resolve_config(cpu, extra))
  (ok, _), (_, refused) = [p.communicate(timeout=600) for p in procs]
  assert [p.returncode for p in procs] == [0, 2], refused[-2000:]
  assert ok.count('inception.cli.train') == 20
  lines = [l for l in refused.splitlines() if l.startswith('error: ')]
  assert 'Traceback' not in refused and len(lines) == 1
  assert 'num_epochs: 4.0 -> 5.0' in lines[0]
  assert os.listdir(bare) == ['sweep.json']  # a dry run writes nothing


def test_make_frontier_resumes_the_published_runs_from_a_fresh_clone(
    tmp_path, monkeypatch):
  """The Makefile's frontier, planned by today's code against the committed
  runs (trained at a pinned older commit): every one resolves to its own
  config, so a rerun skips them and trains only the rest."""
  import shutil  # pylint: disable=g-import-not-at-top
  published = os.path.join(REPO, 'results', 'cifar10_frontier')
  copy = str(tmp_path / 'frontier')
  shutil.copytree(published, copy, ignore=shutil.ignore_patterns('*.png'))
  monkeypatch.chdir(REPO)  # the tuning runs are found from the root
  config_arg = os.path.join(REPO, 'configs', 'inception_cifar.py') + ':frontier'
  extra = ['--config.dataset=folder:/tmp/cifar10']
  config = sweep.resolve_config(config_arg, extra)
  runs = sweep.plan(copy, sweep.load_sweep(
      os.path.join(REPO, 'configs', 'sweeps', 'cifar10_frontier.py'), config))
  sweep.check_rerun(copy, config_arg, extra, runs, config)
  trained = {n for n in os.listdir(published)
             if os.path.exists(os.path.join(published, n, 'summary.json'))}
  assert len(runs) == 24 and {r.name for r in runs if r.done()} == trained
  changed = extra + ['--config.batch_size=64']
  with pytest.raises(UserError, match='batch_size: 128 -> 64'):
    sweep.check_rerun(copy, config_arg, changed, runs,
                      sweep.resolve_config(config_arg, changed))


def test_rerun_compares_the_recorded_resolved_config(tmp_path):
  """A new manifest records the resolved config; spelling does not matter."""
  workdir = str(tmp_path / 'w')
  config_arg = os.path.join(REPO, CONFIG)
  runs = sweep.plan(workdir, [{'seed': 0}])
  extra = cli_overrides()
  sweep.write_manifest(workdir, config_arg, 's.py', extra, runs,
                       sweep.resolve_config(config_arg, extra))
  with open(os.path.join(workdir, 'sweep.json'), encoding='utf-8') as f:
    assert json.load(f)['resolved']['num_train_steps'] == 8
  batch = quick_config().batch_size
  # Another spelling of the same config; a cadence field may change.
  sweep.check_rerun(workdir, config_arg, extra + [
      f'--config.batch_size={batch}', '--config.log_every_steps=3'], runs)
  with pytest.raises(UserError, match=f'batch_size: {batch} -> 2'):
    sweep.check_rerun(workdir, config_arg, extra + ['--config.batch_size=2'],
                      runs)


@pytest.mark.parametrize('overrides', [
    '[{1: 2}]', '[{"": 1}]', '[{None: 1}]', '[{"seed=1": 1}]',
    '[{"model..width": 0.5}]', '[{"seed": {1: 2}}]', '[{"seed": object()}]',
    '[{"seed": [1, {2}]}]', '[{"model": 1}]', '[{"model": {"width": 1.0}}]',
])
def test_malformed_overrides_are_one_line_naming_the_sweep_file(tmp_path,
                                                                 overrides):
  path = _write(tmp_path / 'odd.py',
                f'def get_sweep(config):\n  return {overrides}\n')
  with pytest.raises(UserError, match=f'sweep file {re.escape(path)}: '):
    sweep.load_sweep(path, quick_config())


def test_different_overrides_never_share_a_run_directory(tmp_path):
  accents = sweep.plan(str(tmp_path), [{'data_dir': 'é'}, {'data_dir': 'ü'}])
  assert len({r.workdir for r in accents}) == 2
  assert all(r.name.startswith('data_dir=_-') for r in accents)
  # ASCII names stay as they were: the published runs' and running sweeps'.
  assert sweep.run_name({'train_split': 'train[:80%]'}) == (
      'train_split=train__80__')
  for folder in os.listdir(os.path.join(REPO, 'results')):
    path = os.path.join(REPO, 'results', folder, 'sweep.json')
    if os.path.exists(path):
      with open(path, encoding='utf-8') as f:
        for entry in json.load(f)['runs']:
          assert sweep.run_name(entry['overrides']) == entry['name']
  # Names that coincide gain a hash; the same overrides twice are refused.
  runs = sweep.plan(str(tmp_path), [{'a.x': 1}, {'b.x': 1},
                                    {'data_dir': 'a:b'}, {'data_dir': 'a/b'},
                                    {'seed': 1}])
  assert len({r.workdir for r in runs}) == 5 and runs[-1].name == 'seed=1'
  with pytest.raises(UserError, match='duplicate runs'):
    sweep.plan(str(tmp_path), [{'seed': 1, 'lr': 2}, {'lr': 2, 'seed': 1}])
  # A directory of that name holding other overrides is not taken over.
  sweep.write_status(sweep.Run('data_dir=a_b', {'data_dir': 'a:b'},
                               str(tmp_path / 'data_dir=a_b')),
                     {'status': 'done', 'overrides': {'data_dir': 'a:b'}})
  (mine,), (other,) = (sweep.plan(str(tmp_path), [{'data_dir': v}])
                       for v in ('a:b', 'a/b'))
  assert mine.name == 'data_dir=a_b' and other.name != mine.name


@pytest.fixture
def probe_worker(tmp_path, monkeypatch):
  """Workers that train nothing: each writes its summary and the memory
  fraction it was given (``env``) into its run directory, and exits 0."""
  (tmp_path / 'probe_worker.py').write_text(
      'import os, sys\n'
      'w = sys.argv[sys.argv.index("--workdir") + 1]\n'
      'open(os.path.join(w, "env"), "w").write(\n'
      '    os.environ.get("XLA_CLIENT_MEM_FRACTION", "unset"))\n'
      'open(os.path.join(w, "summary.json"), "w").write("{}")\n')
  monkeypatch.setattr(sweep, 'TRAIN_MODULE', 'probe_worker')
  monkeypatch.setenv('PYTHONPATH', str(tmp_path))
  for var in sweep.GPU_MEMORY_VARS:
    monkeypatch.delenv(var, raising=False)


def test_parallel_workers_share_an_accelerator_s_memory(tmp_path, monkeypatch,
                                                        probe_worker):
  """With --parallel N each worker may take 0.9/N of a GPU's memory, not the
  75% a JAX process takes by default (the second would run out of it); a
  memory setting of the user's is left alone."""
  def fractions(parallel, name):
    runs = sweep.plan(str(tmp_path / name), [{'seed': 0}, {'seed': 1}])
    sweep.execute(runs, CONFIG, [], parallel, echo=lambda _: None)
    return {(tmp_path / name / r.name / 'env').read_text() for r in runs}

  assert fractions(1, 'one') == {'unset'}
  assert fractions(4, 'four') == {'0.225'}
  monkeypatch.setenv('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  assert fractions(4, 'theirs') == {'unset'}
  assert sweep.worker_env(2, {})['XLA_CLIENT_MEM_FRACTION'] == '0.450'
  assert sweep.worker_env(1, {}) is None


def test_parallel_workers_split_the_cpu_cores():
  """N workers on C cores get C // N threads each, and one-thread workers
  run XLA's ops single-threaded: none waits at a barrier for a thread that
  another worker holds. A thread setting of the user's stands."""
  one = sweep.worker_env(2, {'XLA_FLAGS': '--xla_dump_to=/d'}, cores=2)
  assert one['OMP_NUM_THREADS'] == '1'
  assert one['XLA_FLAGS'] == (
      '--xla_dump_to=/d ' + sweep.SINGLE_THREAD_XLA_FLAG)
  four = sweep.worker_env(4, {}, cores=16)
  assert four['OMP_NUM_THREADS'] == '4' and 'XLA_FLAGS' not in four
  assert sweep.worker_env(8, {}, cores=2)['OMP_NUM_THREADS'] == '1'
  theirs = sweep.worker_env(2, {
      'OMP_NUM_THREADS': '2',
      'XLA_FLAGS': '--xla_cpu_multi_thread_eigen=true'}, cores=2)
  assert theirs['OMP_NUM_THREADS'] == '2'
  assert theirs['XLA_FLAGS'] == '--xla_cpu_multi_thread_eigen=true'


def test_a_sweep_that_plans_from_finished_runs_runs_until_it_plans_none(
    tmp_path, probe_worker):
  """An lr grid grows past a winning edge only once its runs have finished:
  one command runs every round (the frontier's tuning sweep is one)."""
  from inception.cli import sweep as sweep_main  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / 'w'
  sweep_file = _write(tmp_path / 'grows.py', (
      'import os\n'
      'def get_sweep(config):\n'
      f'  done = lambda s: os.path.exists(r"{workdir}/seed=%d/summary.json" % s)\n'
      '  n = 1\n'
      '  while n < 3 and done(n - 1):\n'
      '    n += 1\n'
      '  return [{"seed": s} for s in range(n)]\n'))
  lines = []
  results = sweep_main.run_sweep(quick_config(), CONFIG, sweep_file,
                                 str(workdir), cli_overrides(),
                                 echo=lines.append)
  assert results == {'seed=0': 'done', 'seed=1': 'done', 'seed=2': 'done'}
  assert sum('plans 1 more run' in line for line in lines) == 2
  manifest = json.loads((workdir / 'sweep.json').read_text())
  assert [r['name'] for r in manifest['runs']] == ['seed=0', 'seed=1',
                                                   'seed=2']


def test_unwritable_run_directory_fails_that_run_only(tmp_path):
  """A run that cannot even start is recorded failed; nothing raises."""
  from inception.cli import sweep as sweep_main  # pylint: disable=g-import-not-at-top
  runs = sweep.plan(str(tmp_path), [{'seed': 0}])
  _write(tmp_path / 'seed=0', 'a file where the run directory goes')
  lines = []
  assert sweep.execute(runs, CONFIG, [], echo=lines.append) == {
      'seed=0': 'failed'}
  assert 'cannot start it' in lines[-1]
  # A sweep folder that cannot be written: one error, before any run.
  workdir = tmp_path / 'w'
  os.makedirs(workdir / f'.write_test.{os.getpid()}')  # blocks the probe
  sweep_file = _write(tmp_path / 's.py',
                      'def get_sweep(config):\n  return [{"seed": 0}]\n')
  with pytest.raises(UserError, match='is not writable'):
    sweep_main.run_sweep(quick_config(), CONFIG, sweep_file, str(workdir),
                         cli_overrides())
  assert os.listdir(workdir) == [f'.write_test.{os.getpid()}']


LONG = cli_overrides(num_train_steps=100_000, checkpoint_every_steps=100_000)


def _start_long_sweep(tmp_path, seeds, *args, env=None):
  """A sweep of long tiny runs; returns (process, workdir) once all train."""
  path = _write(tmp_path / 'long.py',
                'from inception.sweeps import sweep\ndef get_sweep(config):\n'
                f'  return sweep.axis("seed", {seeds})\n')
  home = tmp_path / 'home'
  home.mkdir()
  proc = subprocess.Popen(
      SWEEP + ['--sweep', path, '--workdir=~/sw', *args, *LONG], cwd=REPO,
      text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      env={**os.environ, 'HOME': str(home), **(env or {})})
  workdir = str(home / 'sw')
  deadline = time.time() + 400
  while time.time() < deadline and not all(
      record_steps(os.path.join(workdir, f'seed={s}'), 'train/loss')
      for s in seeds):
    if proc.poll() is not None:
      break
    time.sleep(0.1)
  return proc, workdir


def _status(workdir, name):
  with open(os.path.join(workdir, name, 'status.json'), encoding='utf-8') as f:
    return json.load(f)


@pytest.fixture(scope='module')
def interrupted_sweep(tmp_path_factory):
  """Two long runs side by side: one worker is killed -9, then Ctrl-C.

  The workdir is given as ``--workdir=~/sw`` with HOME in a temporary folder.
  """
  tmp = tmp_path_factory.mktemp('interrupted')
  proc, workdir = _start_long_sweep(tmp, [0, 1], '--parallel', '2')
  assert proc.poll() is None, proc.communicate()[1][-3000:]
  os.kill(_status(workdir, 'seed=0')['pid'], signal.SIGKILL)
  deadline = time.time() + 60
  while time.time() < deadline and _status(workdir, 'seed=0')[
      'status'] == 'running':
    time.sleep(0.1)
  proc.send_signal(signal.SIGINT)  # as a terminal's Ctrl-C reaches it
  stdout, stderr = proc.communicate(timeout=300)
  return workdir, proc.returncode, stdout, stderr, tmp


def test_ctrl_c_stops_the_runs_with_a_checkpoint_and_reports(
    interrupted_sweep):
  workdir, code, stdout, stderr, _ = interrupted_sweep
  assert code == 130, stderr[-3000:]  # documented in inception.cli.sweep
  assert 'Traceback' not in stderr, stderr[-3000:]
  stopped = _status(workdir, 'seed=1')
  assert stopped['status'] == 'stopped' and stopped['returncode'] == 0
  assert any(n.isdigit() for n in os.listdir(
      os.path.join(workdir, 'seed=1', 'checkpoints')))
  assert os.path.exists(os.path.join(workdir, 'results.md'))
  assert '| seed=1 | mlpconv | stopped |' in stdout
  assert 'run the same command again to continue' in stdout


def test_killed_worker_is_recorded_by_its_signal(interrupted_sweep):
  workdir, _, stdout, _, _ = interrupted_sweep
  killed = _status(workdir, 'seed=0')
  assert killed['status'] == 'failed' and killed['returncode'] == -9
  assert killed['error'] == 'killed by SIGKILL'
  with open(os.path.join(workdir, 'results.md'), encoding='utf-8') as f:
    md = f.read()
  assert '- seed=0: killed by SIGKILL\n' in md
  assert 'failed seed=0' in stdout


def test_tilde_workdir_is_the_home_folder(interrupted_sweep):
  workdir, _, _, _, tmp = interrupted_sweep
  assert workdir == str(tmp / 'home' / 'sw')
  assert os.path.isdir(os.path.join(workdir, 'seed=0'))
  assert _status(workdir, 'seed=1')['command'][6] == os.path.join(workdir,
                                                                  'seed=1')
  assert not os.path.exists(os.path.join(REPO, '~'))


def test_second_ctrl_c_aborts_at_once(tmp_path):
  proc, workdir = _start_long_sweep(tmp_path, [0])
  assert proc.poll() is None, proc.communicate()[1][-3000:]
  proc.send_signal(signal.SIGINT)
  time.sleep(0.05)
  proc.send_signal(signal.SIGINT)
  _, stderr = proc.communicate(timeout=60)
  assert proc.returncode == 130 and 'Traceback' not in stderr
  assert 'error: interrupted twice' in stderr
  assert _status(workdir, 'seed=0')['status'] == 'stopped'
  assert not os.path.exists(os.path.join(workdir, 'results.md'))
