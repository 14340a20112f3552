"""A config file that loads a run's saved config: ``--config=<this file>:WORKDIR``.

``eval.py`` passes it when no ``--config`` is given, so that ``--config.*``
overrides apply to the run's own config exactly as to a config file.
"""
from inception import workdir

# Fields added to the configs after runs were saved, with the value that
# reproduces what those runs did; an older run gains them so that, e.g.,
# ``eval.py --workdir OLD --config.eval_flip=true`` works.
ADDED_FIELDS = {'eval_flip': False}


def get_config(run_dir: str):
  """The resolved config saved in ``run_dir/config.json``."""
  config = workdir.load_config(run_dir)
  for field, value in ADDED_FIELDS.items():
    if field not in config:
      config[field] = value
  return config
