"""Shared entry-point plumbing: one-line errors, configs saved in workdirs."""
import logging as std_logging
import os
import re
import signal
import sys
import threading
import warnings

import jax
import ml_collections
from absl import app, flags
from absl import logging as absl_logging
from ml_collections.config_flags import config_flags

from inception import errors
from inception.training import workdir as workdir_lib
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
    # Orbax and JAX log every save and every absent accelerator at INFO, and
    # libraries warn about what is no mistake of the user's; only our own
    # warnings show unless --verbosity is given.
    if not flags.FLAGS['verbosity'].present:
      absl_logging.set_verbosity(absl_logging.WARNING)
      quiet_libraries()
    std_logging.getLogger('jax._src.xla_bridge').setLevel(std_logging.WARNING)
    try:
      # From here on Ctrl-C is a KeyboardInterrupt again (inception.interrupt
      # covered the imports and flag parsing), told in one line below.
      if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
      return main(argv)
    except UserError as e:
      print(f'error: {e}', file=sys.stderr, flush=True)
      sys.exit(2)
    except TrainingError as e:
      # Leave at once: background writers of a failed save would otherwise
      # print their own tracebacks at interpreter exit. Every file of the
      # run was closed when the loop unwound.
      # Through the real stderr: a failed save mutes fd 2 (errors.mute_stderr).
      errors.write_stderr(f'error: {e}\n')
      if jax.process_count() > 1:  # the other processes need the shutdown
        sys.exit(1)
      sys.stdout.flush()
      os._exit(1)  # pylint: disable=protected-access
    except KeyboardInterrupt:
      # Worker threads of the input pipeline would each print a traceback
      # on a normal exit: leave at once.
      print('error: interrupted; nothing was written after the interrupt',
            file=sys.stderr, flush=True)
      sys.stdout.flush()
      os._exit(130)  # pylint: disable=protected-access

  # --help lists the command's own flags, defined beside ``main`` (absl
  # lists only the __main__ module's; the rest stay on --helpfull).
  if main.__module__ != '__main__':
    for flag in flags.FLAGS.get_flags_for_module(main.__module__):
      flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  app.run(wrapped, flags_parser=_parse_flags)


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_OURS = (_PACKAGE, os.path.dirname(_PACKAGE))  # the package, the repository


def _is_ours(path: str) -> bool:
  """Whether a log record or warning comes from this project's code."""
  path = os.path.abspath(path or '')
  here, repo = _OURS
  return path.startswith(here + os.sep) or (
      os.path.dirname(path) == repo and path.endswith('.py'))


class _OwnRecordsOnly(std_logging.Filter):
  """Keeps our log records and libraries' fatal ones; drops the rest.

  Libraries' errors reach the user as exceptions, which the entry points
  turn into one ``error:`` line; orbax also logs a failed write, with its
  traceback, from each of its threads, some after the save has returned.
  ``--verbosity`` shows everything.
  """

  def filter(self, record):
    return record.levelno >= std_logging.CRITICAL or _is_ours(record.pathname)


def quiet_libraries() -> None:
  """Silences other libraries' warnings (log records and Python warnings).

  The project's own warnings (``inception/`` and the entry points) and any
  library's fatal records still show; ``--verbosity`` keeps everything.
  """
  absl_logging.get_absl_handler().addFilter(_OwnRecordsOnly())
  show = warnings.showwarning

  def showwarning(message, category, filename, lineno, file=None,
                  line=None):
    if _is_ours(filename):
      show(message, category, filename, lineno, file, line)

  warnings.showwarning = showwarning


def _parse_flags(argv):
  """absl's flag parsing; any failure in it is a user mistake, told in one line.

  This covers unknown or mistyped ``--config.*`` overrides, a missing config
  file, a bad ``:arg`` and an exception raised by the config file itself.
  """
  try:
    args = flags.FLAGS(argv)
    for name in flags.FLAGS:
      flag = flags.FLAGS[name]
      # config_flags defers a config file's load error to first use.
      if config_flags.is_config_flag(flag) and flag.value is not None:
        getattr(flag.value, 'keys')
    return args
  except Exception as e:  # pylint: disable=broad-except
    print(f'error: {one_line(e)}', file=sys.stderr, flush=True)
    sys.exit(2)


def one_line(e: BaseException) -> str:
  """An exception's message, squeezed onto one line."""
  text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
  text = text.replace('\\n', '\n').replace("\\'", "'")
  lines = [l.strip() for l in text.splitlines() if l.strip()]
  if not lines:
    return type(e).__name__
  field = re.fullmatch(r"""["']+([\w.]+)["']+""", lines[0])
  if field:  # ConfigDict's KeyError for a field that does not exist
    return ' '.join([f'no config field {field.group(1)!r}; check the '
                     '--config.* override.'] +
                    [l.strip("'") for l in lines[1:]])
  lines[0] = lines[0].replace('flag --', '--', 1)
  if any(l.startswith('Traceback') for l in lines):
    # An exception inside a config file: where, then what.
    return f'{lines[0].rstrip(":")} {lines[-1]}'
  if 'Failed loading config file' in lines[0]:
    return f'cannot load the config file: {lines[-1]}'
  return '; '.join(lines)


def with_saved_config(argv: list[str]) -> list[str]:
  """``argv`` with ``--config=<the workdir's saved config>`` when none is given.

  Lets ``eval.py --workdir W --config.eval_split=...`` override the run's own
  config (absl only parses ``--config.*`` after a ``--config``).
  """
  if any(a == '--config' or a.startswith('--config=') for a in argv):
    return argv
  workdir = None
  for i, a in enumerate(argv):
    if a.startswith('--workdir='):
      workdir = a.split('=', 1)[1]
    elif a == '--workdir' and i + 1 < len(argv):
      workdir = argv[i + 1]
  if not workdir:
    return argv
  from inception.training import saved_config  # pylint: disable=g-import-not-at-top
  return [argv[0], f'--config={saved_config.__file__}:'
          f'{os.path.abspath(os.path.expanduser(workdir))}', *argv[1:]]
