"""Runs a sweep of training runs, then writes its report.

  python sweep.py --config configs/inception_cifar.py \
      --sweep configs/sweeps/bottleneck_ablation.py --workdir runs/ablation \
      [--parallel 2] [--dry_run] [--config.num_epochs=5 ...] \
      [--launcher=slurm --launcher_args=partition=gpu,time=240,gpus_per_node=1]
      [--launcher=ray --ray_address=HOST:6379 --launcher_args=num_gpus=1]

Each run trains in WORKDIR/<run name>/ in its own process. Running the same
command again skips finished runs and resumes interrupted ones. --config.*
overrides (written --config.field=value) apply to every run.
"""
import sys

from absl import flags
from ml_collections import config_flags

from inception import cli, report, sweep

config_flags.DEFINE_config_file('config', None, 'Base experiment config.',
                                lock_config=True)
flags.DEFINE_string('sweep', None, 'Sweep file defining get_sweep(config).')
flags.DEFINE_string('workdir', None, 'Directory holding one dir per run.')
flags.DEFINE_integer('parallel', 1, 'Runs trained at the same time.')
flags.DEFINE_bool('dry_run', False, 'Print one shell command per run (and, '
                  'with --launcher=slurm, the sbatch script); run none.')
flags.DEFINE_enum('launcher', 'local', ['local', 'slurm', 'ray'],
                  'Where runs train: local processes, SLURM via submitit, '
                  'or Ray.')
flags.DEFINE_list('launcher_args', [], 'key=value resources, e.g. slurm: '
                  'partition=gpu,time=240,gpus_per_node=1,cpus_per_task=8,'
                  'nodes=1,account=x; ray: num_cpus=4,num_gpus=1.')
flags.DEFINE_string('ray_address', '', 'Ray cluster address ("" starts a '
                    'local Ray instance).')
flags.DEFINE_string('submitit_cluster', None, "submitit's cluster: unset = "
                    "SLURM where sbatch exists, 'local' = processes here.")
flags.mark_flags_as_required(['config', 'sweep', 'workdir'])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  extra = [a for a in sys.argv[1:] if a.startswith('--config.')]
  config_arg = config_flags.get_config_filename(FLAGS['config'])
  results = sweep.main(FLAGS.config, config_arg, FLAGS.sweep, FLAGS.workdir,
                       extra, FLAGS.parallel, FLAGS.dry_run,
                       launcher=FLAGS.launcher,
                       launcher_args=FLAGS.launcher_args,
                       ray_address=FLAGS.ray_address,
                       submitit_cluster=FLAGS.submitit_cluster)
  if results is None:  # dry run
    return
  print(report.format_summary(report.write_report(FLAGS.workdir)))
  if 'failed' in results.values():
    sys.exit(1)  # every other run finished and the report is written


if __name__ == '__main__':
  cli.run(main)
