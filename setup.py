"""Builds the optional oneDNN kernels (``inception/csrc``).

Everything else is in ``pyproject.toml``. The extension needs oneDNN's
headers and library (the ``onednn-*-cpu-gomp`` wheels in requirements.txt,
x86-64 Linux) and XLA's FFI headers from jaxlib, so install with
``pip install --no-build-isolation -e .`` into an environment that has them
(``make install`` does). Where either is missing the package installs
without it and ``conv_impl='auto'`` keeps XLA's kernels; where both are
there, a compile error fails the install rather than leave a stale or
missing library behind.
"""
import os
import sys

from setuptools import Extension, setup


def _onednn_extension():
  try:
    import jax.ffi  # pylint: disable=g-import-not-at-top
  except ImportError:
    return []
  include, lib = os.path.join(sys.prefix, 'include'), os.path.join(
      sys.prefix, 'lib')
  if not os.path.exists(os.path.join(include, 'oneapi', 'dnnl', 'dnnl.hpp')):
    return []
  return [Extension(
      'inception._onednn_conv',
      ['inception/csrc/onednn_conv.cc', 'inception/csrc/onednn_pool.cc',
       'inception/csrc/onednn_bnorm.cc'],
      include_dirs=[os.path.dirname(os.path.abspath(__file__)), include,
                    jax.ffi.include_dir()],
      library_dirs=[lib], libraries=['dnnl', 'gomp'], runtime_library_dirs=[lib],
      # XLA's FFI headers end some switch functions without a return.
      extra_compile_args=['-std=c++17', '-O2', '-Wno-return-type'],
      language='c++')]


setup(ext_modules=_onednn_extension())
