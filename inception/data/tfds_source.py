"""TFDS builders: open, check and (only when the network answers) prepare.

A dataset that is not prepared and cannot be downloaded fails in seconds
with one line that says what to do, instead of tfds retrying for minutes.
"""

import contextlib
import functools
import os
import socket
import threading

from absl import logging
import tensorflow_datasets as tfds

from inception.data import tf_quiet
from inception.errors import UserError, first_line

# Where TFDS downloads from; INCEPTION_TFDS_PROBE=host:port points the
# reachability probe elsewhere (an air-gapped mirror, or a test).
_PROBE_ADDRESS = ('storage.googleapis.com', 443)
ALTERNATIVES = ("use a TFDS name (e.g. cifar10, mnist), "
                "'folder:/path/to/images' (path/<split>/<class>/<image>) "
                "or 'digits'")


def mocked() -> bool:
  """Whether tfds.testing.mock_data is active (then nothing is prepared)."""
  # mock_data swaps in a no-op download_and_prepare and fakes the data.
  fn = tfds.core.DatasetBuilder.download_and_prepare
  return fn.__module__ != 'tensorflow_datasets.core.dataset_builder'


def network_reachable(timeout: float = 2.0) -> bool:
  """Whether the TFDS download host answers, DNS included, within timeout."""
  reached, done = [], threading.Event()

  def probe():
    with contextlib.suppress(OSError):
      host, _, port = os.environ.get('INCEPTION_TFDS_PROBE', '').rpartition(':')
      address = (host, int(port)) if host else _PROBE_ADDRESS
      socket.create_connection(address, timeout=timeout).close()
      reached.append(True)
    done.set()

  threading.Thread(target=probe, daemon=True).start()
  done.wait(timeout)  # A thread, as DNS lookups ignore socket timeouts.
  return bool(reached)


@contextlib.contextmanager
def _quiet_tfds():
  """Hides TFDS's warnings about an empty data_dir: our error explains it."""
  previous = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    yield
  finally:
    logging.set_verbosity(previous)


@functools.lru_cache(maxsize=16)
def builder(name: str, data_dir: str | None, is_mocked: bool):
  """Returns a prepared TFDS builder, failing fast when it can't be had.

  Args:
    name: TFDS dataset name.
    data_dir: where it is prepared (None: TFDS's default).
    is_mocked: `mocked()`, part of the cache key only, so a builder made
      under tfds.testing.mock_data is not reused outside it.
  """
  del is_mocked
  with _quiet_tfds():
    prepared = _prepared_builder(name, data_dir)
  tf_quiet.load()  # before tfds reads the data and imports TF itself
  return prepared


def _prepared_builder(name: str, data_dir: str | None):
  try:
    b = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise UserError(f'unknown dataset {name!r}; {ALTERNATIVES}') from None
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f'cannot open TFDS dataset {name!r} ({first_line(e)}); '
                    f'{ALTERNATIVES}') from None
  keys, features = b.info.supervised_keys, b.info.features
  if (not keys or len(keys) != 2
      or not isinstance(features[keys[0]], tfds.features.Image)
      or not isinstance(features[keys[1]], tfds.features.ClassLabel)):
    raise UserError(f'TFDS dataset {name!r} is not an (image, label) '
                    f'classification dataset; {ALTERNATIVES}')
  if mocked() or b.is_prepared():
    return b
  where = data_dir or 'the default TFDS data_dir'
  fix = ('pass --config.data_dir=<dir where it is prepared>, or use '
         '--config.dataset=folder:/path/to/images or --config.dataset=digits')
  if b.MANUAL_DOWNLOAD_INSTRUCTIONS:
    raise UserError(f'TFDS dataset {name!r} is not prepared in {where} and '
                    f'needs a manual download; {fix}')
  # Without this probe tfds retries downloads for minutes before failing.
  if not network_reachable():
    raise UserError(f'TFDS dataset {name!r} is not prepared in {where} and '
                    f'cannot be downloaded (no network); {fix}')
  tf_quiet.load()  # before tfds imports TF itself
  try:
    b.download_and_prepare()
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f'downloading TFDS dataset {name!r} failed '
                    f'({first_line(e)}); {fix}') from None
  return b


def class_names(b) -> tuple[str, ...]:
  """The label feature's class names."""
  return tuple(b.info.features[b.info.supervised_keys[1]].names)
