"""Many runs: plan and execute sweeps, launch them, report them with statistics.

``sweep`` plans and runs a sweep locally, ``launchers`` on SLURM (submitit) or
Ray (``jobs``: what runs inside each job), ``cost`` prices it; ``report``
turns finished runs into tables and figures with ``stats`` and ``plots``;
``analysis`` inspects checkpoints for the notebook; ``time_to_accuracy`` reads
accuracy against wall time.
"""
