"""One module per command, each flags plus one library call (absl).

``app`` is their shared plumbing (one-line errors, quiet libraries, the
compilation cache). Kept empty so ``python -m inception.cli.train`` can catch
Ctrl-C before the heavy imports.
"""
