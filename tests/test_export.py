"""export.py: a run's inference function, serialised with jax.export."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, quick_config
from inception import data
from inception.kernels import onednn
from inception.training import (evaluate, export, specs, steps, loop,
                                workdir as workdir_lib)
from inception.errors import UserError


@pytest.fixture(scope='module')
def ema_run(tmp_path_factory):
  """The quick config with an EMA, 8 steps: eval uses the EMA weights."""
  workdir = str(tmp_path_factory.mktemp('export_run'))
  loop.train_and_evaluate(quick_config(ema_decay=0.9), workdir)
  return workdir


def _reference(workdir, images):
  """The checkpoint's eval logits, the run's own kernels, and live weights'."""
  exp, state = evaluate.restore_run(workdir_lib.load_config(workdir), workdir)
  apply = jax.jit(lambda v, x: exp.model.apply(
      v, steps.normalize(x, exp.info.mean, exp.info.std), train=False))
  return (np.asarray(apply(state.eval_variables(), images)),
          np.asarray(apply(state.variables(), images)))


def _eval_images(n):
  spec = specs.read(quick_config()).data
  return next(iter(data.eval_batches(spec)))['image'][:n]


def test_exported_logits_equal_the_checkpoints_eval_logits(ema_run):
  result = export.export_model(ema_run)
  assert result['path'] == os.path.join(ema_run, 'export',
                                        'model_8.jax_export')
  assert result['ema'] and result['step'] == 8
  assert result['input'] == 'uint8 [batch, 8, 8, 1]'
  assert result['output'] == 'float32 [batch, 10]'
  with open(result['path'], 'rb') as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  meta = json.load(open(result['metadata_path'], encoding='utf-8'))
  assert meta['class_names'] == [str(i) for i in range(10)]
  for n in (5, 7):  # one program, any batch size
    images = _eval_images(n)
    logits = np.asarray(exported.call(images))
    assert logits.shape == (n, 10) and logits.dtype == np.float32
    ema, live = _reference(ema_run, images)
    np.testing.assert_allclose(logits, ema, rtol=1e-5, atol=1e-5)
    assert not np.allclose(logits, live, atol=1e-3)  # the EMA, not the live


def test_a_fixed_batch_size(ema_run, tmp_path):
  path = str(tmp_path / 'fixed.jax_export')
  result = export.export_model(ema_run, step=4, output=path, batch_size=3)
  assert result['step'] == 4 and result['input'] == 'uint8 [3, 8, 8, 1]'
  exported = export.load(path)
  assert exported.in_avals[0].shape == (3, 8, 8, 1)
  assert np.asarray(exported.call(_eval_images(3))).shape == (3, 10)
  with pytest.raises(Exception):
    exported.call(_eval_images(4))


def test_no_custom_call_reaches_the_artifact(ema_run, tmp_path):
  """XLA's kernels whatever the run's conv_impl; jax.export refuses others."""
  path = str(tmp_path / 'm.jax_export')
  export.export_model(ema_run, output=path)
  module = export.load(path).mlir_module()
  targets = {line.split('custom_call @')[1].split('(')[0]
             for line in module.splitlines() if 'custom_call @' in line}
  assert targets <= {'shape_assertion'}, targets
  if not onednn.available():
    pytest.skip('oneDNN kernels not built')
  exp, state = evaluate.restore_run(quick_config(conv_impl='onednn',
                                                 ema_decay=0.9), ema_run)
  fn = export.inference_fn(exp, state)
  with pytest.raises(ValueError, match='custom calls'):
    jax.export.export(jax.jit(fn))(
        jax.ShapeDtypeStruct((2, 8, 8, 1), np.uint8))


def test_library_errors(ema_run, tmp_path):
  with pytest.raises(UserError, match='is not a directory'):
    export.export_model(str(tmp_path / 'nope'))
  with pytest.raises(UserError, match='no checkpoint at step 5'):
    export.export_model(ema_run, step=5)
  with pytest.raises(UserError, match='--batch_size=0 must be at least 1'):
    export.export_model(ema_run, batch_size=0)
  with pytest.raises(UserError, match="unknown platform 'gpu'"):
    export.export_model(ema_run, platforms=['gpu'])
  (tmp_path / 'junk').write_bytes(b'not an export')
  with pytest.raises(UserError, match='is not a jax.export file'):
    export.load(str(tmp_path / 'junk'))


def test_cli_exports_and_bad_input_is_one_line(ema_run, tmp_path):
  no_ckpt = tmp_path / 'no_ckpt'
  no_ckpt.mkdir()
  (no_ckpt / 'config.json').write_text(json.dumps(quick_config().to_dict()))
  out = str(tmp_path / 'cli.jax_export')
  cases = {
      'ok': (['--workdir', ema_run, '--output', out], None),
      'no_checkpoint': (['--workdir', str(no_ckpt)], 'has no checkpoint'),
      'not_a_run': (['--workdir', str(tmp_path)], 'has no config.json'),
      'missing': (['--workdir', str(tmp_path / 'x')], 'is not a directory'),
  }
  procs = {name: subprocess.Popen(
      [sys.executable, 'export.py', *argv], cwd=REPO, text=True,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
           for name, (argv, _) in cases.items()}
  for name, proc in procs.items():
    stdout, stderr = proc.communicate(timeout=300)
    phrase = cases[name][1]
    if phrase is None:
      assert proc.returncode == 0, stderr[-2000:]
      assert stdout.startswith('exported step 8 (EMA weights, XLA kernels')
      assert os.path.exists(out) and os.path.exists(out + '.json')
      continue
    lines = [l for l in stderr.splitlines() if l.strip()
             and 'oneDNN' not in l and 'absl::InitializeLog' not in l]
    assert proc.returncode == 2 and 'Traceback' not in stderr, stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith('error: '), lines
    assert phrase in lines[0], lines[0]
