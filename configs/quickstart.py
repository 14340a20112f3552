"""The embedded default: GoogLeNet-CIFAR at 1/8 width on scikit-learn's digits.

Fully offline (the 1,797 8x8 digits ship inside scikit-learn), 80/20 split.

  python train.py --config configs/quickstart.py --workdir /tmp/q
"""
from configs import base


def get_config(arg: str = ''):
  """Returns the config; ``arg`` may be 'naive' (the paper's naive blocks)."""
  if arg not in ('', 'naive'):
    raise ValueError(f'unknown config arg {arg!r}; use naive')
  config = base.get_config()
  config.model.name = 'googlenet_cifar'
  config.model.width = 0.125
  config.model.pool_proj = arg != 'naive'  # False: unprojected max-pool branch.
  config.model.bottleneck = arg != 'naive'
  config.model.aux_logits = False  # No auxiliary classifiers.
  config.dataset = 'digits'
  config.train_split = 'train[:80%]'
  config.eval_split = 'train[80%:]'
  config.image_size = 8
  config.channels = 1
  config.augment = 'none'
  config.batch_size = 64
  config.num_epochs = 30.0
  config.learning_rate = 0.05
  config.warmup_epochs = 1.0
  config.log_every_steps = 20
  config.eval_every_epochs = 5.0
  config.checkpoint_every_steps = 200
  return config
