"""The training command: ``python -m inception.cli.train`` (or ``train.py``).

  python -m inception.cli.train --config configs/inception_cifar.py \
      --workdir runs/x [--stop_after_steps N] [--profile_steps N]
      [--config.field=value ...]

Flags, multi-host initialisation, then one library call
(``inception.training.loop.train_and_evaluate``). Sweeps start their runs through
this module, so the library never runs a script by path.
"""
from inception import interrupt

if __name__ == '__main__':  # a sweep's worker: Ctrl-C while importing
  interrupt.install()

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
from ml_collections import config_flags

from inception.cli import app
from inception.training import sharding, loop
from inception.errors import UserError

config_flags.DEFINE_config_file('config', None, 'Experiment config file.',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints and metrics.')
flags.DEFINE_string('coordinator_address', '',
                    'Multi-host: host:port of process 0 (binds only there).')
flags.DEFINE_integer('num_processes', 0,
                     'Multi-host: number of processes (-1: auto-detect).')
flags.DEFINE_integer('process_id', -1, 'Multi-host: index of this process.')
flags.DEFINE_integer('stop_after_steps', None, 'Checkpoint and exit after this '
                     'many steps (time-limited job slots); rerun to continue.')
flags.DEFINE_integer('profile_steps', 0, 'Trace this many steps after the '
                     'first (compiling) one with jax.profiler into '
                     'WORKDIR/profile, for TensorBoard; 0: off.')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  if FLAGS.stop_after_steps is not None and FLAGS.stop_after_steps < 1:
    raise UserError(f'--stop_after_steps={FLAGS.stop_after_steps} must be at '
                    'least 1')
  if FLAGS.profile_steps < 0:
    raise UserError(f'--profile_steps={FLAGS.profile_steps} must be 0 (off) '
                    'or more')
  given = lambda name: FLAGS[name].value if FLAGS[name].present else None
  sharding.check_distributed(FLAGS.coordinator_address,
                             given('num_processes'), given('process_id'))
  sharding.initialize_distributed(FLAGS.coordinator_address,
                                  FLAGS.num_processes, FLAGS.process_id)
  loop.train_and_evaluate(FLAGS.config, FLAGS.workdir, FLAGS.stop_after_steps,
                           profile_steps=FLAGS.profile_steps)


def run():
  """Parses the flags and trains (the console entry point)."""
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main)


if __name__ == '__main__':
  run()
