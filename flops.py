"""Params and MACs of a config's model, Table 1 style.

  python flops.py --config configs/googlenet_imagenet.py [--compare] [--json]
      [--per_layer] [--config.model.width=0.5]

Flags: ``python flops.py --help`` (defined in ``inception.flops_main``).
"""
from inception import interrupt

interrupt.install()  # before the heavy imports: Ctrl-C is one line

from inception import flops_main  # pylint: disable=g-import-not-at-top,wrong-import-position

if __name__ == '__main__':
  flops_main.run()
