"""The export command: ``python export.py`` (or ``-m inception.cli.export``).

  python export.py --workdir runs/x [--step N] [--output FILE]
      [--batch_size B] [--platforms cpu,cuda]

Serialises the run's inference function, uint8 images -> float32 logits,
with ``jax.export`` (``inception.training.export``); by default to
WORKDIR/export/model_<step>.jax_export, for any batch size.
"""
from inception import interrupt

if __name__ == '__main__':  # Ctrl-C while importing is one line
  interrupt.install()

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags

from inception.cli import app
from inception.training import export

flags.DEFINE_string('workdir', None, 'Training workdir with checkpoints/.')
flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
flags.DEFINE_string('output', None, 'File to write (default: '
                    'WORKDIR/export/model_<step>.jax_export).')
flags.DEFINE_integer('batch_size', None, 'A fixed batch size (default: '
                     'symbolic, any batch size).')
flags.DEFINE_list('platforms', None, 'Platforms to lower for, of '
                  f'{",".join(export.PLATFORMS)} (default: this machine\'s).')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  result = export.export_model(FLAGS.workdir, FLAGS.step, FLAGS.output,
                               FLAGS.batch_size, FLAGS.platforms)
  print(export.format_result(result))


def run():
  """Parses the flags and exports (the console entry point)."""
  flags.mark_flags_as_required(['workdir'])
  app.run(main)


if __name__ == '__main__':
  run()
