"""Evaluates a training run's checkpoint and writes WORKDIR/eval.json.

  python eval.py --workdir runs/x [--step N] [--split 'train[90%:]']
      [--config.eval_split=... | --config configs/x.py]

The config is the run's own (WORKDIR/config.json) unless --config is given;
--config.* overrides apply either way. Reading is safe while the run trains.
"""
import sys

from inception import interrupt

interrupt.install()  # before the heavy imports: Ctrl-C is one line

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
from ml_collections import config_flags

from inception import cli, evaluate

config_flags.DEFINE_config_file('config', None, 'Config file (default: the '
                                "workdir's config.json).", lock_config=True)
flags.DEFINE_string('workdir', None, 'Training workdir with checkpoints/.')
flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
flags.DEFINE_string('split', None, 'Split to evaluate (default: eval_split).')
flags.mark_flags_as_required(['workdir'])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  result = evaluate.evaluate_checkpoint(FLAGS.config, FLAGS.workdir,
                                        FLAGS.step, FLAGS.split)
  print(evaluate.format_result(result))


if __name__ == '__main__':
  sys.argv = cli.with_saved_config(sys.argv)
  cli.run(main)
