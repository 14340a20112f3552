"""The embedded default: GoogLeNet-CIFAR at 1/8 width on scikit-learn's digits.

Fully offline (the 1,797 8x8 digits ship inside scikit-learn), 80/20 split.

  python train.py --config configs/quickstart.py --workdir /tmp/q

Expected: eval accuracy about 0.99 on the 359 held-out digits (measured 0.9889,
seed 0, 41 s wall time on a 2-core CPU). ``:naive`` trains the paper's naive
Inception module instead (10.85x the multiply-adds).
"""
from configs import base


def get_config(arg: str = ''):
  """Returns the config; ``arg`` may be 'naive' (the paper's naive blocks)."""
  if arg not in ('', 'naive'):
    raise ValueError(f'unknown config arg {arg!r}; use naive')
  config = base.get_config()
  config.model.name = 'googlenet_cifar'  # The CIFAR GoogLeNet, on 8x8 digits.
  config.model.width = 0.125  # 1/8 width: trains in well under a minute.
  config.model.pool_proj = arg != 'naive'  # False: unprojected max-pool branch.
  config.model.bottleneck = arg != 'naive'  # False: no 1x1 reductions.
  config.model.aux_logits = False  # No auxiliary classifiers.
  config.dataset = 'digits'  # Ships inside scikit-learn: no download.
  config.train_split = 'train[:80%]'  # 1,438 images.
  config.eval_split = 'train[80%:]'  # 359 held-out images.
  config.image_size = 8  # The digits' native size.
  config.channels = 1  # Greyscale.
  config.augment = 'none'  # Crops and flips would change the digits.
  config.batch_size = 64  # 22 steps per epoch.
  config.num_epochs = 30.0  # 660 steps.
  config.learning_rate = 0.05  # Peak of warmup + cosine.
  config.warmup_epochs = 1.0  # Linear warmup.
  config.log_every_steps = 20  # About once per epoch.
  config.eval_every_epochs = 5.0  # Six points on the eval curve.
  config.checkpoint_every_steps = 200  # Three checkpoints and the final one.
  return config
