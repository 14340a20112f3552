"""Shared entry-point wrapper: user mistakes become one line and exit status 2."""
import sys

from absl import app

from inception.errors import UserError


def run(main):
  """``absl.app.run(main)``, printing ``error: ...`` for a ``UserError``."""

  def wrapped(argv):
    try:
      return main(argv)
    except UserError as e:
      print(f'error: {e}', file=sys.stderr, flush=True)
      sys.exit(2)

  app.run(wrapped)
