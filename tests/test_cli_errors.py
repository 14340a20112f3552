"""Bad input: one clear line, exit status 2, no traceback, nothing written.

Every case runs the real entry point in its own process; the processes are
started together, forked from one that imported the libraries once
(``entry_points``), and each case is one test.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

import entry_points
from conftest import CONFIG, REPO, quick_config, xla_flags
from inception.training import identity, loop, specs

QUICK = 'configs/quickstart.py'


def quick_config_of(path):
  """The config file at ``path`` (relative to the repository), resolved."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location('_cfg', os.path.join(REPO, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


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
  os.makedirs(f'{tmp}/hollow/train/a')
  os.makedirs(f'{tmp}/hollow/train/b')
  open(f'{tmp}/hollow/train/a/x.png', 'wb').close()
  with open(f'{tmp}/import_error.py', 'w') as f:
    f.write('import no_such_module_here\n')
  with open(f'{tmp}/raises.py', 'w') as f:
    f.write('def get_sweep(config):\n  raise ValueError("boom")\n')
  os.makedirs(f'{tmp}/torn_config')
  with open(f'{tmp}/torn_config/config.json', 'w') as f:
    f.write('{"model": {"name"')
  old = quick_config().to_dict()
  del old['conv_impl']
  os.makedirs(f'{tmp}/old_config/checkpoints')
  with open(f'{tmp}/old_config/config.json', 'w') as f:
    json.dump(old, f)
  os.makedirs(f'{tmp}/no_ema_run/checkpoints')
  with open(f'{tmp}/no_ema_run/config.json', 'w') as f:
    json.dump(quick_config().to_dict(), f)
  os.makedirs(f'{tmp}/corrupt_sweep/run')
  with open(f'{tmp}/corrupt_sweep/run/config.json', 'w') as f:
    json.dump(old, f)
  with open(f'{tmp}/corrupt_sweep/run/summary.json', 'w') as f:
    f.write('{"status": "do')
  for name, content in (('list_config', '[]'), ('null_config', 'null')):
    os.makedirs(f'{tmp}/{name}/checkpoints/10')
    with open(f'{tmp}/{name}/config.json', 'w') as f:
      f.write(content)
  os.makedirs(f'{tmp}/no_config_run/checkpoints/10')
  os.makedirs(f'{tmp}/deleted_key/checkpoints/10')
  with open(f'{tmp}/deleted_key/config.json', 'w') as f:
    deleted = specs.saved_config(quick_config_of(QUICK))
    del deleted['seed']
    json.dump(deleted, f)
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
                     'batch_size=0 is invalid', w),
      'bad_activation_dtype': (
          train_cmd + ['--config.activation_dtype=float16'], {},
          "activation_dtype='float16' is invalid", w),
      'batch_indivisible': (
          train_cmd + ['--config.batch_size=30'],
          xla_flags('--xla_force_host_platform_device_count=4'),
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
      'width_zero': (train_cmd + ['--config.model.width=0'], {},
                     'model.width=0.0 is invalid', w),
      'width_nan': (train_cmd + ['--config.model.width=nan'], {},
                    'model.width=nan is invalid', w),
      'width_negative': (train_cmd + ['--config.model.width=-1'], {},
                         'model.width=-1.0 is invalid', w),
      'lr_negative': (train_cmd + ['--config.learning_rate=-0.1'], {},
                      'learning_rate=-0.1 is invalid', w),
      'weight_decay_negative': (train_cmd + ['--config.weight_decay=-1e-4'],
                                {}, 'weight_decay=-0.0001 is invalid', w),
      'epochs_inf': (train_cmd + ['--config.num_epochs=inf'], {},
                     'num_epochs=inf is invalid', w),
      'epochs_nan': (train_cmd + ['--config.num_epochs=nan'], {},
                     'num_epochs=nan is invalid', w),
      'seed_too_big': (train_cmd + [f'--config.seed={2**64 + 1}'], {},
                       'seed=18446744073709551617 is invalid', w),
      'stop_after_zero': (train_cmd + ['--stop_after_steps=0'], {},
                          '--stop_after_steps=0 must be at least 1', w),
      'stop_after_negative': (train_cmd + ['--stop_after_steps=-3'], {},
                              '--stop_after_steps=-3 must be at least 1', w),
      'empty_eval_split': (train_cmd + ["--config.eval_split=train[100%:]"],
                           {}, "eval split 'train[100%:]' is empty", w),
      'class_without_images': (
          train_cmd + [f'--config.dataset=folder:{tmp}/hollow'], {},
          'holds no files', w),
      'nested_unknown_field': (train_cmd + ['--config.model.dropout_rat=0.1'],
                               {}, "no config field 'dropout_rat'", w),
      'eval_torn_config': (['eval.py', '--workdir', f'{tmp}/torn_config'], {},
                           'config.json is not valid JSON', None),
      'eval_old_config': (['eval.py', '--workdir', f'{tmp}/old_config'], {},
                          "the config has no field 'conv_impl'", None),
      'ema_decay_one': (train_cmd + ['--config.ema_decay=1'], {},
                        'ema_decay=1.0 is invalid', w),
      'eval_ema_not_kept': (['eval.py', '--workdir', f'{tmp}/no_ema_run',
                             '--config.ema_decay=0.99'], {},
                            'was trained without an EMA of the weights', None),
      'sweep_import_error': (sweep_cmd + [f'{tmp}/import_error.py'], {},
                             'failed to import: ModuleNotFoundError', w),
      'sweep_raises': (sweep_cmd + [f'{tmp}/raises.py'], {},
                       'raised ValueError: boom', w),
      'sweep_workdir_is_a_file': (
          ['sweep.py', '--config', QUICK, '--workdir', f'{tmp}/a_file',
           '--sweep', 'configs/sweeps/demo.py'], {}, 'is a file', None),
      'report_corrupt_summary': (
          ['-m', 'inception.cli.report', f'{tmp}/corrupt_sweep'], {},
          'summary.json is not valid JSON', None),
      'grad_accum_not_dividing': (train_cmd + ['--config.grad_accum_steps=3'],
                                  {}, 'it must divide batch_size=64', w),
      'grad_clip_negative': (train_cmd + ['--config.grad_clip_norm=-1'], {},
                             'grad_clip_norm=-1.0 is invalid', w),
      'no_eval_split': (train_cmd + ['--config.eval_split='], {},
                        "eval_split='' is invalid", w),
      'resume_list_config': (
          ['train.py', '--config', QUICK, '--workdir', f'{tmp}/list_config'],
          {}, 'is not a config (a JSON object)', None),
      'eval_null_config': (['eval.py', '--workdir', f'{tmp}/null_config'], {},
                           'is not a config (a JSON object)', None),
      'resume_without_config_json': (
          ['train.py', '--config', QUICK, '--workdir', f'{tmp}/no_config_run'],
          {}, 'holds a trained run but no config.json', None),
      'resume_with_a_deleted_key': (
          ['train.py', '--config', QUICK, '--workdir', f'{tmp}/deleted_key',
           '--config.seed=3'], {}, 'config.json lacks seed', None),
      'flops_model_too_small': (
          ['flops.py', '--config', 'configs/googlenet_imagenet.py',
           '--config.image_size=9'], {}, 'cannot take 9x9x3 images', None),
      'flops_bad_image_size': (
          ['-m', 'inception.cli.flops', '--config', QUICK,
           '--config.image_size=2'], {}, 'image_size=2 is invalid', None),
  }


@pytest.fixture(scope='module')
def results(tmp_path_factory):
  tmp = str(tmp_path_factory.mktemp('bad_input'))
  cases = _cases(tmp)
  out = entry_points.run_together(
      {name: (argv, {**os.environ, **env})
       for name, (argv, env, _, _) in cases.items()})
  return cases, out


CASES = ['unknown_field', 'wrong_type', 'unknown_model', 'unknown_dataset',
         'tfds_offline', 'folder_missing', 'folder_empty', 'folder_no_classes',
         'bad_split', 'batch_zero', 'bad_activation_dtype', 'batch_indivisible', 'workdir_not_writable',
         'eval_no_checkpoint', 'sweep_syntax_error', 'sweep_unknown_field',
         'width_zero', 'width_nan', 'width_negative', 'lr_negative',
         'weight_decay_negative', 'epochs_inf', 'epochs_nan', 'seed_too_big',
         'stop_after_zero', 'stop_after_negative', 'empty_eval_split',
         'class_without_images', 'nested_unknown_field', 'eval_torn_config',
         'eval_old_config', 'ema_decay_one', 'eval_ema_not_kept',
         'sweep_import_error', 'sweep_raises',
         'sweep_workdir_is_a_file', 'report_corrupt_summary',
         'flops_bad_image_size', 'no_eval_split', 'resume_list_config',
         'eval_null_config', 'resume_without_config_json',
         'resume_with_a_deleted_key', 'flops_model_too_small',
         'grad_accum_not_dividing', 'grad_clip_negative']


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
  loop.train_and_evaluate(quick_config(), workdir, stop_after_steps=4)
  before = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
  proc = subprocess.run(
      [sys.executable, 'train.py', '--config', CONFIG, '--workdir', workdir,
       '--config.model.width=2.0'], cwd=REPO, text=True, capture_output=True,
      timeout=300)
  lines = [l for l in proc.stderr.splitlines() if l.startswith('error: ')]
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr
  assert 'model.width: saved 1.0, requested 2.0' in lines[0]
  assert '--config.init_from=' in lines[0] and 'new --workdir' in lines[0]
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == before
  shutil.rmtree(workdir)
