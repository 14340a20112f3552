"""Trains a model from a config file.

  python train.py --config configs/inception_cifar.py --workdir runs/x
  python train.py --config configs/inception_cifar.py:cpu --workdir runs/x \
      --config.dataset=folder:/tmp/cifar10

Re-running the same command resumes from the latest checkpoint in --workdir.
"""
from absl import flags
from ml_collections import config_flags

from inception import cli, sharding, train

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
flags.mark_flags_as_required(['config', 'workdir'])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  sharding.initialize_distributed(FLAGS.coordinator_address,
                                  FLAGS.num_processes, FLAGS.process_id)
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir, FLAGS.stop_after_steps)


if __name__ == '__main__':
  cli.run(main)
