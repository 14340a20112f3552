"""eval.py warns when the evaluated split overlaps the run's training split."""
import logging
import os

import pytest

from conftest import quick_config, run_cli
from inception.data import sources
from inception.training import evaluate, loop

SIZES = {'train': 1000}


@pytest.mark.parametrize('trained, evaluated, sizes, where', [
    ('train[:90%]', 'train[:10%]', None, 'train[0%:10%]'),
    ('train[:90%]', 'train[90%:]', None, ''),
    ('train[:90%]', 'train[-10%:]', None, ''),
    ('train[:90%]', 'train[-20%:]', None, 'train[80%:90%]'),
    ('train[:80%]', 'train[80%:90%]', None, ''),
    ('train[:90%]', 'train', None, 'train[0%:90%]'),
    ('train', 'train[100:200]', None, 'train[100:200]'),
    ('train', 'train', None, 'train'),
    ('train[:100]', 'train[50:150]', None, 'train[50:100]'),
    ('train[:100]', 'train[100:]', None, ''),
    ('train[:10%]+train[50%:60%]', 'train[55%:]', None, 'train[55%:60%]'),
    ('train[:90%]', 'test', None, ''),
    ('train[:90%]', 'test[:10%]+train[85%:]', None, 'train[85%:90%]'),
    # Percent against indices: only with the split's size.
    ('train[:90%]', 'train[100:200]', None, ''),
    ('train[:90%]', 'train[100:200]', SIZES, 'train[100:200] (100 examples)'),
    ('train[:90%]', 'train[950:]', SIZES, ''),
    ('train[:-100]', 'train[-150:]', None, ''),
    ('train[:-100]', 'train[-150:]', SIZES, 'train[850:900] (50 examples)'),
    # Undecidable: say nothing.
    ('train[:abc]', 'train', None, ''),
    ('train[1shard:2shard]', 'train[:10%]', None, ''),
])
def test_split_overlap(trained, evaluated, sizes, where):
  assert sources.split_overlap(trained, evaluated, sizes) == where


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """The quick config (trained on train[:80%] of the digits), 4 steps."""
  workdir = str(tmp_path_factory.mktemp('overlap_run'))
  loop.train_and_evaluate(quick_config(num_train_steps=4), workdir)
  return workdir


def _warnings(caplog):
  return [r.getMessage() for r in caplog.records
          if r.levelno == logging.WARNING and 'overlaps' in r.getMessage()]


def test_evaluating_training_images_warns(run, caplog):
  assert quick_config().train_split == 'train[:80%]'
  with caplog.at_level(logging.WARNING):
    result = evaluate.evaluate_checkpoint(quick_config(), run,
                                          split='train[:10%]')
  assert result['train_overlap'] == 'train[0%:10%]'
  assert _warnings(caplog) == [
      "eval split 'train[:10%]' overlaps the run's training split "
      "'train[:80%]' in train[0%:10%]: the run trained on those examples, "
      'so this accuracy is not a held-out one']


def test_indices_against_percent_use_the_split_size(run, caplog):
  """1797 digits: train[:80%] is the first 1438; train[1400:1500] overlaps."""
  with caplog.at_level(logging.WARNING):
    result = evaluate.evaluate_checkpoint(quick_config(), run,
                                          split='train[1400:1500]')
  assert result['train_overlap'] == 'train[1400:1438] (38 examples)'
  assert len(_warnings(caplog)) == 1


@pytest.mark.parametrize('split', [None, 'train[90%:]', 'train[1438:]'])
def test_held_out_splits_do_not_warn(run, caplog, split):
  with caplog.at_level(logging.WARNING):
    result = evaluate.evaluate_checkpoint(quick_config(), run, split=split)
  assert result['train_overlap'] is None and not _warnings(caplog)


def test_eval_cli_prints_one_warning_line(run):
  out = run_cli('eval.py', '--workdir', run, '--split', 'train[:10%]')
  assert out.returncode == 0, out.stderr[-2000:]
  lines = [l for l in out.stderr.splitlines() if 'overlaps' in l]
  assert len(lines) == 1 and "in train[0%:10%]" in lines[0], out.stderr
  assert os.path.exists(os.path.join(run, 'eval.json'))
