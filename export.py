"""Exports a run's inference function (uint8 images -> logits) with jax.export.

  python export.py --workdir runs/x [--step N] [--output FILE]
      [--batch_size B] [--platforms cpu,cuda]

Flags: ``python export.py --help`` (defined in ``inception.cli.export``).
"""

from inception import interrupt

interrupt.install()  # before the heavy imports: Ctrl-C is one line

from inception.cli import export as command  # pylint: disable=g-import-not-at-top,wrong-import-position

if __name__ == '__main__':
  command.run()
