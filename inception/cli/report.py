"""The report command: ``python report.py`` (or ``python -m inception.cli.report``).

  python report.py results/cifar10_ablation [--reference bottleneck]
      [--allow_mixed]

Writes a sweep directory's results tables and plots
(``inception.sweeps.report``) and prints the tables.
"""
from inception import interrupt

if __name__ == '__main__':
  interrupt.install()

# pylint: disable=g-import-not-at-top,wrong-import-position
import os
import sys

from absl import flags

from inception.cli import app
from inception.errors import UserError
from inception.sweeps import report

flags.DEFINE_string('reference', 'bottleneck', 'Arm the others are compared '
                    'with: an arm label, or a kind (bottleneck, naive, '
                    "separable); its family is the frontier's reference.")
flags.DEFINE_bool('allow_mixed', False, 'Draw the frontier even when its runs '
                  'come from different git commits or platforms (results.md '
                  'says so).')
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) != 2:
    raise UserError('give one sweep directory: python report.py WORKDIR '
                    f'[--reference ARM] [--allow_mixed] (got {argv[1:]})')
  workdir = os.path.abspath(os.path.expanduser(argv[1]))
  try:
    paths = report.write_report(workdir, FLAGS.reference,
                                allow_mixed=FLAGS.allow_mixed)
  except report.ReportNotWritten as e:
    print(e.table, flush=True)
    raise UserError(str(e)) from None
  except OSError as e:  # e.g. a folder that cannot be listed
    raise UserError(f'cannot read {e.filename or argv[1]} '
                    f'({e.strerror or e})') from None
  print(report.format_summary(paths))


def run():
  """Parses the flags and writes the report (the console entry point)."""
  app.run(main)


if __name__ == '__main__':
  run()
