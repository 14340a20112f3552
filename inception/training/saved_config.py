"""A config file that loads a run's saved config: ``--config=<this file>:WORKDIR``.

``eval.py`` passes it when no ``--config`` is given, so that ``--config.*``
overrides apply to the run's own config exactly as to a config file.
"""
from inception.training import workdir


def get_config(run_dir: str):
  """The resolved config saved in ``run_dir/config.json``."""
  return workdir.load_config(run_dir)
