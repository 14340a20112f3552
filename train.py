"""Trains a model from a config file.

  python train.py --config configs/inception_cifar.py --workdir runs/x
  python train.py --config configs/inception_cifar.py:cpu --workdir runs/x \
      --config.dataset=folder:/tmp/cifar10

Re-running the same command resumes from the latest checkpoint in --workdir.
Flags: ``python train.py --help`` (defined in ``inception.cli.train``).
"""

from inception import interrupt

interrupt.install()  # before the heavy imports: Ctrl-C is one line

from inception.cli import train as command  # pylint: disable=g-import-not-at-top,wrong-import-position

if __name__ == '__main__':
  command.run()
