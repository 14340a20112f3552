"""Builds the optional oneDNN kernels: the ``inception-onednn`` package.

The extension needs oneDNN's
headers and library (the ``onednn-*-cpu-gomp`` wheels in requirements.txt,
x86-64 Linux) and XLA's FFI headers from jaxlib, so install with
``pip install --no-build-isolation ./onednn`` into an environment that has them
(``make install`` does). Where either is missing the build stops with one
line saying what to install; ``conv_impl='auto'`` keeps XLA's kernels until
the library is there. The ``inception`` package itself needs neither.
"""
import hashlib
import json
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# Bumped whenever a handler's signature or the library's symbols change;
# inception/kernels/onednn.py refuses a library with another value.
ABI_VERSION = 5
MANIFEST_SUFFIX = '.manifest.json'


def _onednn_extension():
  try:
    import jax.ffi  # pylint: disable=g-import-not-at-top
  except ImportError:
    sys.exit('error: building inception-onednn needs jaxlib (XLA\'s FFI '
             'headers) in this environment: pip install -r requirements.txt, '
             'then pip install --no-build-isolation ./onednn')
  include, lib = os.path.join(sys.prefix, 'include'), os.path.join(
      sys.prefix, 'lib')
  if not os.path.exists(os.path.join(include, 'oneapi', 'dnnl', 'dnnl.hpp')):
    sys.exit('error: building inception-onednn needs oneDNN\'s headers '
             '(onednn-devel-cpu-gomp, x86-64 Linux) in this environment')
  import jaxlib.version  # pylint: disable=g-import-not-at-top
  return [Extension(
      'inception_onednn._kernels',
      ['csrc/onednn_conv.cc', 'csrc/onednn_pool.cc', 'csrc/onednn_bnorm.cc'],
      include_dirs=[os.path.dirname(os.path.abspath(__file__)), include,
                    jax.ffi.include_dir()],
      library_dirs=[lib], libraries=['dnnl', 'gomp'], runtime_library_dirs=[lib],
      # XLA's FFI headers end some switch functions without a return.
      extra_compile_args=['-std=c++17', '-O2', '-Wno-return-type'],
      define_macros=[
          ('INCEPTION_ONEDNN_ABI', str(ABI_VERSION)),
          ('INCEPTION_JAXLIB_VERSION', f'"{jaxlib.version.__version__}"')],
      language='c++')]


class BuildWithManifest(build_ext):
  """Writes ``<library>.manifest.json`` beside each built library.

  The manifest holds the library's size and SHA-256, the ABI version and the
  jaxlib it was built against; inception/kernels/onednn.py checks all four before it
  loads the library, so a truncated, foreign or stale file is never loaded.
  """

  def run(self):
    super().run()
    for ext in self.extensions:
      path = self.get_ext_fullpath(ext.name)
      with open(path, 'rb') as f:
        data = f.read()
      macros = dict(ext.define_macros)
      manifest = dict(size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                      abi=int(macros['INCEPTION_ONEDNN_ABI']),
                      jaxlib=macros['INCEPTION_JAXLIB_VERSION'].strip('"'))
      with open(path + MANIFEST_SUFFIX, 'w') as f:
        json.dump(manifest, f, indent=1)


setup(ext_modules=_onednn_extension(), cmdclass={'build_ext': BuildWithManifest},
      packages=['inception_onednn'])
