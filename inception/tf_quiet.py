"""TensorFlow, imported once with its start-up banner silenced.

TF serves only the input pipeline and TensorBoard summaries here. At import
its C++ logging prints CPU-feature and oneDNN notices on stderr before any
log setting applies, which would break the one-line error promise of the
entry points; the import runs with file descriptor 2 pointed at /dev/null.
Python exceptions raised by the import are unaffected.
"""
import contextlib
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


with _stderr_to_devnull():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top,unused-import

# tf.data runs on the host only: keep TF off any GPU, which belongs to JAX.
tf.config.set_visible_devices([], 'GPU')
