"""TensorFlow, imported on first use, once, with its start-up banner silenced.

TF serves only the input pipeline here (TensorBoard events need none), and its
import takes several seconds of CPU: importing it lazily lets a bad flag or config
fail in about a second. At import its C++ logging prints CPU-feature and
oneDNN notices on stderr before any log setting applies, which would break
the one-line error promise of the entry points; the import runs with file
descriptor 2 pointed at /dev/null. Python exceptions raised by the import are
unaffected.

Use ``from inception.data.tf_quiet import tf`` (imports TF at the first attribute
access), and call ``load()`` before handing control to a library that imports
TF itself (tensorflow_datasets' readers).
"""
import contextlib
import functools
import os
import sys


@contextlib.contextmanager
def _stderr_to_devnull():
  sys.stderr.flush()
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


@functools.cache
def load():
  """Imports TensorFlow quietly, keeps it off the GPU, and returns it."""
  with _stderr_to_devnull():
    import tensorflow  # pylint: disable=g-import-not-at-top
  # tf.data runs on the host only: keep TF off any GPU, which belongs to JAX.
  tensorflow.config.set_visible_devices([], 'GPU')
  return tensorflow


@functools.cache
def available() -> bool:
  """Whether TensorFlow can be imported here (JAX-only GPU images lack it)."""
  try:
    load()
  except ImportError:
    return False
  return True


class _LazyTensorFlow:
  """Stands in for the ``tensorflow`` module until an attribute is used."""

  def __getattr__(self, name):
    return getattr(load(), name)


tf = _LazyTensorFlow()
