"""Training and evaluation of one run: config -> specs -> experiment -> loop.

``specs`` checks and reads the config once; ``experiment`` builds
the model, optimizer, mesh and jitted steps; ``loop`` trains
(``train_and_evaluate``) with checkpoints (``checkpoint``), metrics
(``metrics``) and the workdir's files (``workdir``, ``identity``);
``evaluate`` and ``export`` read checkpoints back. Training knows nothing of
sweeps.
"""
