"""Params and MACs of a config's model, Table 1 style.

  python flops.py --config configs/googlenet_imagenet.py [--compare] [--json]
      [--per_layer] [--config.model.width=0.5]

Flags: ``python flops.py --help`` (defined in ``inception.cli.flops``).
"""

from inception import interrupt

interrupt.install()  # before the heavy imports: Ctrl-C is one line

from inception.cli import flops as command  # pylint: disable=g-import-not-at-top,wrong-import-position

if __name__ == '__main__':
  command.run()
