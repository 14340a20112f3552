"""The evaluation command: ``python eval.py`` (or ``python -m inception.cli.eval``).

  python eval.py --workdir runs/x [--step N] [--split 'train[90%:]']
      [--config.eval_split=... | --config configs/x.py]

Evaluates a run's checkpoint and writes WORKDIR/eval.json. The config is the
run's own (WORKDIR/config.json) unless --config is given; --config.*
overrides apply either way. Reading is safe while the run trains.
"""
from inception import interrupt

if __name__ == '__main__':
  interrupt.install()

# pylint: disable=g-import-not-at-top,wrong-import-position
import sys

from absl import flags
from ml_collections import config_flags

from inception.cli import app
from inception.training import evaluate

config_flags.DEFINE_config_file('config', None, 'Config file (default: the '
                                "workdir's config.json).", lock_config=True)
flags.DEFINE_string('workdir', None, 'Training workdir with checkpoints/.')
flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
flags.DEFINE_string('split', None, 'Split to evaluate (default: eval_split).')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  result = evaluate.evaluate_checkpoint(FLAGS.config, FLAGS.workdir,
                                        FLAGS.step, FLAGS.split)
  print(evaluate.format_result(result))


def run():
  """Parses the flags and evaluates (the console entry point)."""
  flags.mark_flags_as_required(['workdir'])
  sys.argv = app.with_saved_config(sys.argv)
  app.run(main)


if __name__ == '__main__':
  run()
