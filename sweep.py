"""Runs a sweep of training runs, then writes its report.

  python sweep.py --config configs/inception_cifar.py \
      --sweep configs/sweeps/bottleneck_ablation.py --workdir runs/ablation

Flags and behaviour: ``python sweep.py --help`` and ``inception.cli.sweep``.
"""

from inception import interrupt

interrupt.install()  # before the heavy imports: Ctrl-C is one line

from inception.cli import sweep as command  # pylint: disable=g-import-not-at-top,wrong-import-position

if __name__ == '__main__':
  command.run()
