"""End-to-end training: train, evaluate, resume, many devices, many hosts."""
import json
import os
import socket

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from conftest import (CONFIG, TINY_MACS, TINY_PARAMS, assert_same_state,
                      cli_overrides, final_state, quick_config, record_steps,
                      records, run_cli, xla_flags)
from inception import data
from inception.training import evaluate, loop

_records = records


def _assert_same_curve(a: dict, b: dict):
  """The same loss curve up to float reduction order.

  Summing a batch in another order moves the first gradient norm by ~2e-4
  here (as permuting the batch on one device does), and early training
  amplifies that about tenfold per step, so the first loss is compared
  tightly, the next two to 1e-3 and the rest loosely. Per-device BatchNorm
  statistics, or a wrong batch slice, would already change the first loss.
  """
  assert sorted(a) == sorted(b)
  a, b = [a[s] for s in sorted(a)], [b[s] for s in sorted(b)]
  np.testing.assert_allclose(a[:1], b[:1], rtol=1e-5)
  np.testing.assert_allclose(a[:3], b[:3], rtol=1e-3)
  np.testing.assert_allclose(a, b, rtol=0.1)


def test_tensorboard_events_carry_the_jsonl_scalars(straight_run):
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  workdir, _ = straight_run
  events = event_accumulator.EventAccumulator(workdir)
  events.Reload()
  board = {e.step: e.value for e in events.Scalars('train/loss')}
  jsonl = _records(workdir, 'train/loss')
  assert sorted(board) == sorted(jsonl) == list(range(1, 9))
  np.testing.assert_allclose([board[s] for s in jsonl], list(jsonl.values()),
                             rtol=1e-6)
  assert {'eval/accuracy', 'train/grad_norm'} <= set(
      events.Tags()['scalars'])


_IMPORTS_TF = (
    'import sys; sys.path.insert(0, "tests")\n'
    'from conftest import quick_config\n'
    'from inception.training import loop\n'
    'loop.train_and_evaluate(quick_config(), sys.argv[1])\n'
    'print("tensorflow" in sys.modules)\n')


def test_a_run_on_in_memory_data_never_imports_tensorflow(tmp_path):
  """TF's import costs seconds of CPU per process; only TFDS streams (and
  resizing) need it, TensorBoard events do not."""
  out = run_cli('-c', _IMPORTS_TF, str(tmp_path / 'w'))
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.split()[-1] == 'False'


def test_train_writes_workdir(straight_run):
  workdir, summary = straight_run
  assert summary['status'] == 'done' and summary['step'] == 8
  files = set(os.listdir(workdir))
  assert {'config.json', 'metrics.jsonl', 'summary.json', 'checkpoints'} <= files
  assert any(f.startswith('events.out.tfevents') for f in files)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['4', '8']
  losses = _records(workdir, 'train/loss')
  assert sorted(losses) == list(range(1, 9))
  assert losses[8] < losses[1]
  assert 0.0 <= summary['final_eval_accuracy'] <= 1.0
  assert summary['params'] == TINY_PARAMS and summary['macs'] == TINY_MACS
  with open(os.path.join(workdir, 'config.json'), encoding='utf-8') as f:
    assert json.load(f)['model']['name'] == 'nin_cifar_tiny'


def test_quickstart_googlenet_trains_and_evaluates(tmp_path):
  """The shipped quickstart itself (GoogLeNet-CIFAR at 1/8 width), briefly."""
  from configs import quickstart  # pylint: disable=g-import-not-at-top
  config = quickstart.get_config()
  config.update(num_train_steps=6, log_every_steps=1, eval_every_epochs=0.0,
                checkpoint_every_steps=6)
  summary = loop.train_and_evaluate(config, str(tmp_path))
  assert summary['status'] == 'done' and summary['step'] == 6
  assert summary['params'] == 94_578 and summary['macs'] == 1_423_232
  losses = _records(str(tmp_path), 'train/loss')
  assert sorted(losses) == list(range(1, 7)) and losses[6] < losses[1]
  result = evaluate.evaluate_checkpoint(config, str(tmp_path))
  assert result['accuracy'] == summary['final_eval_accuracy']


def test_eval_reproduces_final_metrics(straight_run):
  workdir, summary = straight_run
  result = evaluate.evaluate_checkpoint(quick_config(), workdir)
  assert result['step'] == 8 and result['num_examples'] == 359
  assert result['accuracy'] == summary['final_eval_accuracy']
  assert result['loss'] == pytest.approx(summary['final_eval_loss'], rel=1e-6)
  assert len(result['per_class_accuracy']) == 10
  # Top-5 (10 classes) is in eval.py's result, the summary and metrics.jsonl.
  assert result['top5_accuracy'] == summary['final_eval_top5_accuracy']
  assert result['accuracy'] <= result['top5_accuracy'] <= 1.0
  from conftest import records  # pylint: disable=g-import-not-at-top
  assert records(workdir, 'eval/top5_accuracy')
  with open(os.path.join(workdir, 'eval.json'), encoding='utf-8') as f:
    assert json.load(f)['accuracy'] == result['accuracy']


def test_resume_equals_uninterrupted_run(straight_run, tmp_path):
  """4 steps, stop, 4 more: bitwise the same params as 8 straight."""
  workdir = str(tmp_path)
  first = loop.train_and_evaluate(quick_config(), workdir, stop_after_steps=4)
  assert first['status'] == 'stopped' and first['step'] == 4
  assert not os.path.exists(os.path.join(workdir, 'summary.json'))
  second = loop.train_and_evaluate(quick_config(), workdir)
  assert second['status'] == 'done' and second['step'] == 8
  assert_same_state(final_state(workdir), final_state(straight_run[0]))
  assert _records(workdir, 'train/loss') == _records(straight_run[0],
                                                     'train/loss')


def test_four_devices_match_one_device(straight_run, tmp_path):
  """Same global batch on 4 forced host devices: the same loss curve."""
  out = run_cli('train.py', '--config', CONFIG, '--workdir',
                str(tmp_path), *cli_overrides(),
                env=xla_flags('--xla_force_host_platform_device_count=4'))
  assert out.returncode == 0, out.stderr[-3000:]
  assert '4 device(s)' in out.stdout + out.stderr
  _assert_same_curve(_records(str(tmp_path), 'train/loss'),
                    _records(straight_run[0], 'train/loss'))


def test_batch_not_divisible_by_devices_is_one_line(tmp_path):
  out = run_cli('train.py', '--config', CONFIG, '--workdir',
                str(tmp_path), '--config.batch_size=30',
                env=xla_flags('--xla_force_host_platform_device_count=4'))
  assert out.returncode == 2
  assert out.stderr.strip().splitlines()[-1].startswith(
      'error: batch_size=30 must be a positive multiple of the device count (4')
  assert 'Traceback' not in out.stderr


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_with_gloo_match_one(straight_run, tmp_path):
  """2 processes on 127.0.0.1 (gloo collectives) train like 1 process."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from conftest import REPO  # pylint: disable=g-import-not-at-top
  address = f'127.0.0.1:{_free_port()}'
  procs = [subprocess.Popen(
      [sys.executable, 'train.py', '--config', CONFIG,
       '--workdir', str(tmp_path), *cli_overrides(),
       f'--coordinator_address={address}', '--num_processes=2',
       f'--process_id={i}'], cwd=REPO, text=True, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT) for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
  assert '2 device(s), 2 process(es)' in outs[0]
  _assert_same_curve(_records(str(tmp_path), 'train/loss'),
                    _records(straight_run[0], 'train/loss'))


def _write_folder(root, per_class=40, size=8):
  """A learnable 10-class folder: class c is a bright square at position c."""
  rng = np.random.default_rng(0)
  for c in range(10):
    os.makedirs(os.path.join(root, 'train', f'class{c}'), exist_ok=True)
    for i in range(per_class):
      img = rng.integers(0, 60, (size, size), dtype=np.uint8)
      img[c % 4 * 2:c % 4 * 2 + 2, c // 4 * 2:c // 4 * 2 + 4] = 255
      Image.fromarray(img, 'L').save(
          os.path.join(root, 'train', f'class{c}', f'{i}.png'))
  return root


def test_image_folder_train_eval_resume(tmp_path):
  folder = _write_folder(str(tmp_path / 'images'))
  workdir = str(tmp_path / 'run')
  config = quick_config(dataset=f'folder:{folder}')  # the quick program
  first = loop.train_and_evaluate(config, workdir, stop_after_steps=4)
  assert first['step'] == 4
  summary = loop.train_and_evaluate(config, workdir)
  assert summary['status'] == 'done' and summary['step'] == 8
  result = evaluate.evaluate_checkpoint(config, workdir)
  assert result['accuracy'] == summary['final_eval_accuracy']
  assert result['num_examples'] == 80  # train[80%:] of 400 images
  assert sorted(_records(workdir, 'train/loss')) == list(range(1, 9))


def test_tfds_mock_data_train_eval(tmp_path):
  with tfds.testing.mock_data(num_examples=160,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    data.clear_caches()
    config = quick_config(dataset='cifar10')
    summary = loop.train_and_evaluate(config, str(tmp_path))
    result = evaluate.evaluate_checkpoint(config, str(tmp_path))
  data.clear_caches()
  assert summary['status'] == 'done'
  assert result['accuracy'] == summary['final_eval_accuracy']
  assert result['num_examples'] == 160  # mock_data gives every split spec 160


def test_training_without_tensorboardx_writes_jsonl_only(tmp_path, monkeypatch):
  """An image with the core requirements only still records metrics."""
  import sys  # pylint: disable=g-import-not-at-top
  monkeypatch.setitem(sys.modules, 'tensorboardX', None)  # import fails
  workdir = str(tmp_path / 'run')
  loop.train_and_evaluate(quick_config(num_train_steps=4), workdir)
  assert record_steps(workdir, 'train/loss') == [1, 2, 3, 4]
  assert not [f for f in os.listdir(workdir) if f.startswith('events.')]


def test_eval_flip_averages_the_logits_of_each_image_and_its_mirror():
  """Flip test-time augmentation: mean logits over x and x[:, :, ::-1]."""
  import types  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from inception.training import steps  # pylint: disable=g-import-not-at-top
  # A "model" that sees only the image's first column: mirroring changes it.
  apply_fn = lambda variables, x, train: x[:, :, 0, :2].mean(1)
  state = types.SimpleNamespace(apply_fn=apply_fn, eval_variables=dict)
  image = np.zeros((1, 4, 4, 3), np.uint8)
  image[0, :, 0, 0] = 100  # class 0 on the left edge
  image[0, :, 3, 1] = 255  # class 1, stronger, on the right edge
  batch = {'image': image, 'label': np.array([1]), 'mask': np.array([True])}
  common = dict(mean=(0., 0., 0.), std=(1., 1., 1.), num_classes=2)
  plain = steps.make_eval_step(None, **common)(state, batch)
  flipped = steps.make_eval_step(None, flip=True, **common)(state, batch)
  assert float(plain['correct']) == 0  # left column only: class 0
  assert float(flipped['correct']) == 1  # mean of left (100, 0), right (0, 255)
  logits = (jnp.array([[100., 0.]]) + jnp.array([[0., 255.]])) / 2
  assert np.isclose(float(flipped['loss']), float(
      -jax.nn.log_softmax(logits)[0, 1]), rtol=1e-5)


def test_ema_moves_towards_the_variables_and_is_what_eval_uses():
  """Each step: ema = d * ema + (1 - d) * (params, BatchNorm statistics)."""
  import jax  # pylint: disable=g-import-not-at-top
  from inception.training import experiment, specs, steps  # pylint: disable=g-import-not-at-top
  exp = experiment.setup(specs.read(quick_config(ema_decay=0.75)))
  state = exp.init_state()
  ema = jax.device_get(state.variables())
  rng = np.random.default_rng(0)
  batch = {'image': rng.integers(0, 256, (32, 8, 8, 1), np.uint8),
           'label': np.arange(32) % 10}
  for _ in range(3):  # the first step's learning rate is 0 (warm-up)
    state, _ = exp.train_step(state, batch, exp.dropout_rng)
    ema = jax.tree.map(lambda e, v: 0.75 * e + 0.25 * v, ema,
                       jax.device_get(state.variables()))
  assert set(state.ema) == {'params', 'batch_stats'}
  for e, want in zip(jax.tree.leaves(jax.device_get(state.ema)),
                     jax.tree.leaves(ema)):
    np.testing.assert_allclose(e, want, rtol=1e-5, atol=1e-6)
  batch = {**batch, 'mask': np.ones(32, bool)}
  with_ema = exp.eval_step(state, batch)
  plain = steps.TrainState.create(apply_fn=state.apply_fn, tx=exp.tx,
                                  **state.ema)  # the EMA as live variables
  swapped = state.replace(ema=state.variables(), **state.ema)
  assert float(with_ema['loss']) == float(exp.eval_step(plain, batch)['loss'])
  assert float(with_ema['loss']) != float(exp.eval_step(swapped,
                                                        batch)['loss'])


def test_a_run_without_ema_keeps_the_checkpoint_layout_of_older_runs():
  """Checkpoints saved before the EMA existed must still restore."""
  from flax import serialization  # pylint: disable=g-import-not-at-top
  from inception.training import experiment, specs  # pylint: disable=g-import-not-at-top
  state = experiment.setup(specs.read(quick_config())).abstract_state()
  assert set(serialization.to_state_dict(state)) == {
      'step', 'params', 'opt_state', 'batch_stats'}


def test_ema_run_resumes_bitwise_and_a_run_without_keeps_none(tmp_path,
                                                              straight_run):
  """The EMA is checkpointed: 4 + 4 steps equal 8; off, the state has none."""
  from inception.sweeps import analysis  # pylint: disable=g-import-not-at-top
  straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
  config = quick_config(ema_decay=0.9)
  loop.train_and_evaluate(config, straight)
  loop.train_and_evaluate(config, resumed, stop_after_steps=4)
  summary = loop.train_and_evaluate(config, resumed)
  a, b = analysis.restore(straight)[1], analysis.restore(resumed)[1]
  assert_same_state(a.ema, b.ema)
  assert_same_state(a.params, b.params)
  assert summary['final_eval_accuracy'] == evaluate.evaluate_checkpoint(
      config, resumed)['accuracy']
  assert not hasattr(analysis.restore(straight_run[0])[1], 'ema')


def test_eval_step_counts_top5_as_the_label_among_the_five_highest():
  import types  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from inception.training import steps  # pylint: disable=g-import-not-at-top
  logits = jnp.array([
      [9., 8, 7, 6, 5, 4, 3],   # label 0: top-1 and top-5
      [9., 8, 7, 6, 5, 4, 3],   # label 4: 5th, top-5 only
      [9., 8, 7, 6, 5, 4, 3],   # label 5: 6th, neither
      [1., 1, 1, 1, 1, 1, 1],   # label 6: tied with all, counts
  ])
  state = types.SimpleNamespace(eval_variables=lambda: {},
                                apply_fn=lambda v, x, train: logits)
  step = steps.make_eval_step(None, mean=0.0, std=1.0, num_classes=7)
  sums = step(state, {'image': jnp.zeros((4, 2, 2, 1)),
                      'label': jnp.array([0, 4, 5, 6]),
                      'mask': jnp.array([True, True, True, True])})
  assert float(sums['correct_top5']) == 3 and float(sums['count']) == 4
  masked = step(state, {'image': jnp.zeros((4, 2, 2, 1)),
                        'label': jnp.array([0, 4, 5, 6]),
                        'mask': jnp.array([True, False, True, False])})
  assert float(masked['correct_top5']) == 1


def test_gradient_accumulation_matches_one_batch(tmp_path):
  """k=2 micro-batches of B/2 take the step one batch of B takes.

  Without BatchNorm (each micro-batch would normalise with its own
  statistics) and dropout (its masks are drawn per micro-batch).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from conftest import final_state  # pylint: disable=g-import-not-at-top
  states = {}
  for k in (1, 2):
    config = quick_config(grad_accum_steps=k, weight_decay=1e-4)
    config.model.use_bn = False
    config.model.dropout_rate = 0.0
    workdir = str(tmp_path / f'k{k}')
    loop.train_and_evaluate(config, workdir)
    states[k] = final_state(workdir)[0]
  for a, b in zip(jax.tree.leaves(states[1]), jax.tree.leaves(states[2])):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_gradient_accumulation_with_batchnorm_trains_and_resumes(tmp_path):
  """With BatchNorm too: it trains, and a resume is bitwise the same run."""
  from conftest import assert_same_state, final_state  # pylint: disable=g-import-not-at-top
  straight = str(tmp_path / 'straight')
  loop.train_and_evaluate(quick_config(grad_accum_steps=4), straight)
  resumed = str(tmp_path / 'resumed')
  loop.train_and_evaluate(quick_config(grad_accum_steps=4), resumed,
                           stop_after_steps=3)
  summary = loop.train_and_evaluate(quick_config(grad_accum_steps=4), resumed)
  assert summary['status'] == 'done'
  assert_same_state(final_state(straight), final_state(resumed))
  # The micro-batches are real: BatchNorm over quarters is another run.
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  whole = str(tmp_path / 'whole')
  loop.train_and_evaluate(quick_config(), whole)
  assert not all(np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(final_state(whole)), jax.tree.leaves(
          final_state(straight))))


def test_gradient_clipping_bounds_the_update():
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from inception.training import build, specs  # pylint: disable=g-import-not-at-top
  params = {'w': jnp.ones((4, 4))}
  grads = {'w': jnp.full((4, 4), 10.0)}  # global norm 40
  for clip, expected in ((0.0, 40.0), (0.5, 0.5)):
    spec = specs.read(quick_config(grad_clip_norm=clip, weight_decay=0.0,
                                   momentum=0.0)).optimizer
    tx = build.optimizer(spec, lambda step: 1.0)
    updates, _ = tx.update(grads, tx.init(params), params)
    assert float(optax.global_norm(updates)) == pytest.approx(expected,
                                                              rel=1e-5)
