"""Shared entry-point plumbing: one-line errors, configs saved in workdirs."""
import json
import logging as std_logging
import os
import sys

import jax
import ml_collections
from absl import app, flags
from absl import logging as absl_logging

from inception.errors import TrainingError, UserError


def run(main):
  """``absl.app.run(main)``; a UserError exits 2 and a TrainingError exits 1.

  Either prints one line, ``error: <message>``, and no traceback.
  """
  # Compiled programs are cached on disk: a resumed run, a second seed or a
  # sweep of the same model compiles once. JAX_COMPILATION_CACHE_DIR moves it.
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update('jax_compilation_cache_dir', os.path.join(
        os.path.expanduser('~'), '.cache', 'inception-1x1', 'jax'))

  def wrapped(argv):
    # Orbax and JAX log every save and every absent accelerator at INFO;
    # --verbosity=0 brings them back.
    if not flags.FLAGS['verbosity'].present:
      absl_logging.set_verbosity(absl_logging.WARNING)
    std_logging.getLogger('jax._src.xla_bridge').setLevel(std_logging.WARNING)
    try:
      return main(argv)
    except (UserError, TrainingError) as e:
      print(f'error: {e}', file=sys.stderr, flush=True)
      sys.exit(2 if isinstance(e, UserError) else 1)

  app.run(wrapped)


def workdir_config(flag_values, name: str, workdir: str
                   ) -> ml_collections.ConfigDict:
  """The ``--config`` flag when given, else the run's ``workdir/config.json``."""
  if flag_values[name].present or flag_values[name].value is not None:
    return flag_values[name].value
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise UserError(f'{workdir} has no config.json; pass --config or the '
                    'workdir of a training run')
  with open(path, encoding='utf-8') as f:
    return ml_collections.ConfigDict(json.load(f))
