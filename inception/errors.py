"""User-facing errors: one clear line, no traceback."""


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
