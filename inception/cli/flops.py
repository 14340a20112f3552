"""The FLOP command: ``python flops.py`` (or ``python -m inception.cli.flops``).

  python flops.py --config configs/googlenet_imagenet.py [--compare]
      [--json] [--per_layer] [--config.model.bottleneck=false]

Params and MACs of the config's model (``inception.models.flops``), Table 1 style;
``--compare`` adds the naive variant (no 1x1 reductions) side by side.
"""
from inception import interrupt

if __name__ == '__main__':  # Ctrl-C while importing is one line
  interrupt.install()

# pylint: disable=g-import-not-at-top,wrong-import-position
import json

from absl import flags
from ml_collections import config_flags

from inception.cli import app
from inception.models import flops
from inception.training import build, specs

config_flags.DEFINE_config_file('config', None, 'Experiment config file.')
flags.DEFINE_bool('compare', False, 'Bottleneck and naive side by side.')
flags.DEFINE_bool('json', False, 'Print one JSON object.')
flags.DEFINE_bool('per_layer', False, 'One row per layer.')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  specs.check(FLAGS.config)
  model = specs.model_spec(FLAGS.config)
  shape, name = model.input_shape, model.name
  build.cost(build.model(model), model)  # a size it cannot take: error
  if FLAGS.compare:
    naive = flops.naive_overrides(name)
    a = flops.analyze(build.model(model, **{k: True for k in naive}), shape,
                      f'{name} (bottleneck)')
    b = flops.analyze(build.model(model, **naive), shape, f'{name} (naive)')
    if FLAGS.json:
      print(json.dumps({'bottleneck': a.to_json(), 'naive': b.to_json(),
                        'macs_ratio': b.macs / a.macs}))
      return
    for r in (a, b):
      print(f'### {r.model}\n\n{flops.markdown_table(r)}\n')
    print(f'### side by side\n\n{flops.markdown_compare(a, b)}')
    return
  r = flops.analyze(build.model(model), shape, name)
  if FLAGS.json:
    print(json.dumps(r.to_json()))
  elif FLAGS.per_layer:
    print(flops.markdown_layers(r) + '\n\n' + flops.summary_line(r))
  else:
    print(flops.markdown_table(r))


def run():
  """Parses the flags and prints the accounting (the console entry point)."""
  flags.mark_flags_as_required(['config'])
  app.run(main)


if __name__ == '__main__':
  run()
