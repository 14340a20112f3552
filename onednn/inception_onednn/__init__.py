"""oneDNN kernels for ``inception.kernels.onednn``: the built library lives here.

Nothing to import: ``inception.kernels.onednn`` finds ``_kernels*.so`` beside
this file, checks it against its build manifest and registers its FFI
handlers with XLA.
"""
