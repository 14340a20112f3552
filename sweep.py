"""Runs a sweep of training runs, then writes its report.

  python sweep.py --config configs/inception_cifar.py \
      --sweep configs/sweeps/bottleneck_ablation.py --workdir runs/ablation \
      [--parallel 2] [--dry_run] [--config.num_epochs=5 ...] \
      [--launcher=slurm --launcher_args=partition=gpu,time=240,gpus_per_node=1]
      [--launcher=ray --ray_address=HOST:6379 --launcher_args=num_gpus=1]

Each run trains in WORKDIR/<run name>/ in its own process. Running the same
command again skips finished runs and resumes interrupted ones. --config.*
overrides (written --config.field=value) apply to every run.
Flags: ``python sweep.py --help`` (defined in ``inception.sweep_main``).
"""
from inception import sweep_main

if __name__ == '__main__':
  sweep_main.run()
