"""Evaluates a training run's checkpoint and writes WORKDIR/eval.json.

  python eval.py --workdir runs/x [--step N] [--split 'train[90%:]']
      [--config.eval_split=... | --config configs/x.py]

Flags: ``python eval.py --help`` (defined in ``inception.cli.eval``).
"""

from inception import interrupt

interrupt.install()  # before the heavy imports: Ctrl-C is one line

from inception.cli import eval as command  # pylint: disable=g-import-not-at-top,wrong-import-position

if __name__ == '__main__':
  command.run()
