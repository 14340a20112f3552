"""Ctrl-C while an entry point is still importing: one line, exit 130.

The libraries take seconds to import, and a KeyboardInterrupt raised inside
them prints a traceback. Entry points call ``install()`` before importing
anything heavy; ``inception.cli.app.run`` hands SIGINT back to Python once the
command starts, where it is told in one line too. Only standard-library
imports here, so that installing it is instant.
"""
import os
import signal
import sys


def _interrupted(signum, frame):
  del signum, frame
  print('error: interrupted while starting; nothing was written',
        file=sys.stderr, flush=True)
  os._exit(130)  # pylint: disable=protected-access


def install() -> None:
  """Makes SIGINT exit at once with one line until ``cli.run`` starts."""
  signal.signal(signal.SIGINT, _interrupted)
