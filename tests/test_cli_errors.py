"""Bad input: one clear line, exit status 2, no traceback, nothing written.

Every case runs the real entry point in its own process; the processes are
started together (they mostly wait on imports) and each case is one test.
"""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import CONFIG, REPO, quick_config
from inception import train

QUICK = 'configs/quickstart.py'


def _cases(tmp):
  """name -> (argv, extra env, expected phrase, path that must not appear)."""
  os.makedirs(f'{tmp}/empty')
  os.makedirs(f'{tmp}/flat/train')
  open(f'{tmp}/flat/train/a.png', 'wb').close()
  open(f'{tmp}/a_file', 'w').close()
  os.makedirs(f'{tmp}/no_ckpt')
  with open(f'{tmp}/bad_syntax.py', 'w') as f:
    f.write('def get_sweep(config)\n  return []\n')
  with open(f'{tmp}/bad_field.py', 'w') as f:
    f.write('def get_sweep(config):\n  return [{"model.widht": 0.5}]\n')
  w = f'{tmp}/w'  # must never be created by a failing command
  train_cmd = ['train.py', '--config', QUICK, '--workdir', w]
  sweep_cmd = ['sweep.py', '--config', QUICK, '--workdir', w, '--sweep']
  return {
      'unknown_field': (train_cmd + ['--config.modle.name=x'], {},
                        "no config field 'modle'", w),
      'wrong_type': (train_cmd + ['--config.batch_size=big'], {},
                     '--config.batch_size=big', w),
      'unknown_model': (train_cmd + ['--config.model.name=resnet50'], {},
                        'valid names: googlenet, googlenet_cifar', w),
      'unknown_dataset': (train_cmd + ['--config.dataset=nosuchdataset'], {},
                          "unknown dataset 'nosuchdataset'", w),
      'tfds_offline': (train_cmd + ['--config.dataset=cifar10',
                                    f'--config.data_dir={tmp}/empty'],
                       {'INCEPTION_TFDS_PROBE': '127.0.0.1:9'},
                       'cannot be downloaded (no network)', w),
      'folder_missing': (train_cmd + [f'--config.dataset=folder:{tmp}/nope'],
                         {}, 'does not exist', w),
      'folder_empty': (train_cmd + [f'--config.dataset=folder:{tmp}/empty'],
                       {}, 'has no split subfolders', w),
      'folder_no_classes': (train_cmd + [f'--config.dataset=folder:{tmp}/flat'],
                            {}, 'has no class subfolders', w),
      'bad_split': (train_cmd + ['--config.train_split=train[:abc]'], {},
                    "bad split 'train[:abc]'", w),
      'batch_zero': (train_cmd + ['--config.batch_size=0'], {},
                     'batch_size=0 must be a positive multiple', w),
      'batch_indivisible': (
          train_cmd + ['--config.batch_size=30'],
          {'XLA_FLAGS': '--xla_force_host_platform_device_count=4'},
          'batch_size=30 must be a positive multiple of the device count (4',
          w),
      'workdir_not_writable': (['train.py', '--config', QUICK, '--workdir',
                                f'{tmp}/a_file/run'], {},
                               'cannot create workdir', None),
      'eval_no_checkpoint': (['eval.py', '--config', QUICK, '--workdir',
                              f'{tmp}/no_ckpt'], {}, 'has no checkpoint', None),
      'sweep_syntax_error': (sweep_cmd + [f'{tmp}/bad_syntax.py'], {},
                             'has a syntax error at line 1', w),
      'sweep_unknown_field': (sweep_cmd + [f'{tmp}/bad_field.py'], {},
                              "config has no field 'model.widht'", w),
  }


@pytest.fixture(scope='module')
def results(tmp_path_factory):
  tmp = str(tmp_path_factory.mktemp('bad_input'))
  cases = _cases(tmp)
  procs = {name: subprocess.Popen(
      [sys.executable, *argv], cwd=REPO, text=True, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, env={**os.environ, **env})
           for name, (argv, env, _, _) in cases.items()}
  out = {}
  for name, proc in procs.items():
    stdout, stderr = proc.communicate(timeout=300)
    out[name] = (proc.returncode, stdout, stderr)
  return cases, out


CASES = ['unknown_field', 'wrong_type', 'unknown_model', 'unknown_dataset',
         'tfds_offline', 'folder_missing', 'folder_empty', 'folder_no_classes',
         'bad_split', 'batch_zero', 'batch_indivisible', 'workdir_not_writable',
         'eval_no_checkpoint', 'sweep_syntax_error', 'sweep_unknown_field']


def _check(results, name):
  cases, out = results
  _, _, phrase, must_not_exist = cases[name]
  code, stdout, stderr = out[name]
  lines = [l for l in stderr.splitlines() if l.strip()
           and 'oneDNN' not in l and 'absl::InitializeLog' not in l]
  assert code == 2, (code, stderr[-2000:])
  assert 'Traceback' not in stderr, stderr[-3000:]
  assert len(lines) == 1 and lines[0].startswith('error: '), lines
  assert phrase in lines[0], lines[0]
  if must_not_exist:
    assert not os.path.exists(must_not_exist), 'a failed command wrote files'
  return lines[0]


@pytest.mark.parametrize('name', CASES)
def test_bad_input_is_one_line(results, name):
  _check(results, name)


def test_every_case_is_tested(results):
  assert sorted(CASES) == sorted(results[0])


def test_unknown_model_lists_every_name(results):
  from inception import models  # pylint: disable=g-import-not-at-top
  line = _check(results, 'unknown_model')
  assert all(name in line for name in models.MODELS)


def test_foreign_checkpoint_is_refused_and_kept(tmp_path):
  """Resuming another model's workdir: a clear error; the checkpoint survives."""
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(quick_config(), workdir, stop_after_steps=4)
  before = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
  proc = subprocess.run(
      [sys.executable, 'train.py', '--config', CONFIG, '--workdir', workdir,
       '--config.model.width=2.0'], cwd=REPO, text=True, capture_output=True,
      timeout=300)
  lines = [l for l in proc.stderr.splitlines() if l.startswith('error: ')]
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr
  assert 'model.width=1.0, config asks for 2.0' in lines[0]
  assert '--config.init_from=' in lines[0] and 'fresh --workdir' in lines[0]
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == before
  shutil.rmtree(workdir)
