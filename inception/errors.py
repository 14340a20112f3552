"""User-facing errors: one clear line, no traceback."""
import os
import sys


class UserError(Exception):
  """A mistake in user input (config, flags, data, workdir).

  Entry points catch it, print ``error: <message>`` on one line and exit with
  status 2. The message says what was wrong and how to fix it.
  """


class TrainingError(Exception):
  """A run that cannot go on (non-finite loss, failed save, ...).

  Entry points print it on one line and exit with status 1; the last good
  checkpoint is kept.
  """


def first_line(e: BaseException, limit: int = 200) -> str:
  """An exception's first message line (at most ``limit`` characters)."""
  lines = str(e).strip().splitlines()
  return lines[0][:limit] if lines else type(e).__name__


# Where stderr really goes: fd 2, or a copy of it while a checkpoint save
# holds fd 2 back (``checkpoint._stderr_held``) or after ``mute_stderr``.
REAL_STDERR = [2]


def write_stderr(text: str) -> None:
  """Writes to the real stderr, even while fd 2 is held back or muted."""
  try:
    os.write(REAL_STDERR[0], text.encode())
  except OSError:
    pass


def mute_stderr() -> None:
  """Sends fd 2 and ``sys.stderr`` to /dev/null for the rest of the process.

  After a failed checkpoint write, TensorStore's writer threads, and the
  Python callbacks they run, go on printing tracebacks after the save has
  returned; the failure reaches the user as one ``error:`` line, written
  with ``write_stderr``.
  """
  if sys.stderr is not None:
    sys.stderr.flush()
  if REAL_STDERR[0] == 2:
    REAL_STDERR[0] = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  os.close(devnull)
  sys.stderr = open(os.devnull, 'w', encoding='utf-8')  # pylint: disable=consider-using-with
