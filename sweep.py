"""Runs a sweep of training runs, then writes its report.

  python sweep.py --config configs/inception_cifar.py \
      --sweep configs/sweeps/bottleneck_ablation.py --workdir runs/ablation \
      [--parallel 2] [--dry_run] [--config.num_epochs=5 ...]

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
flags.DEFINE_bool('dry_run', False, 'Print one shell command per run; run none.')
flags.mark_flags_as_required(['config', 'sweep', 'workdir'])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  extra = [a for a in sys.argv[1:] if a.startswith('--config.')]
  config_arg = config_flags.get_config_filename(FLAGS['config'])
  results = sweep.main(FLAGS.config, config_arg, FLAGS.sweep, FLAGS.workdir,
                       extra, FLAGS.parallel, FLAGS.dry_run)
  if results is None:  # dry run
    return
  print(report.format_summary(report.write_report(FLAGS.workdir)))
  if 'failed' in results.values():
    sys.exit(1)  # every other run finished and the report is written


if __name__ == '__main__':
  cli.run(main)
