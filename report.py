"""Writes a sweep directory's results tables and plots.

  python report.py results/cifar10_ablation [--reference bottleneck] [--allow_mixed]

Flags: ``python report.py --help`` (defined in ``inception.cli.report``).
"""

from inception import interrupt

interrupt.install()  # before the heavy imports: Ctrl-C is one line

from inception.cli import report as command  # pylint: disable=g-import-not-at-top,wrong-import-position

if __name__ == '__main__':
  command.run()
