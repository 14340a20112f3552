"""Network in Network on CIFAR-10, the paper's recipe adapted.

Lin et al. trained the public Caffe model with SGD momentum 0.9, weight decay
1e-4, dropout 0.5 and a learning rate divided by 10 on plateaus; no BatchNorm,
no augmentation beyond global contrast normalisation / ZCA. Here: the same
network and regulariser, SGD + Nesterov, lr 0.05 with warmup + cosine over 120
epochs, and the standard pad-4 crop + flip augmentation instead of ZCA.

  python train.py --config configs/nin_cifar.py --workdir runs/nin

The paper reports 8.81% test error with augmentation (91.2% accuracy); not
measured here.

Args: ``naive`` removes the hidden 1x1 layers (the ablation).
"""
from configs import base


def get_config(arg: str = ''):
  """Returns the config; ``arg`` may be 'naive'."""
  if arg not in ('', 'naive'):
    raise ValueError(f'unknown config arg {arg!r}; use naive')
  config = base.get_config()
  config.model.name = 'nin_cifar'  # The public Caffe model, 966,986 params.
  config.model.bottleneck = arg != 'naive'  # 'naive' drops the hidden 1x1 layers.
  config.model.dropout_rate = 0.5  # Dropout after the first two mlpconv blocks.
  config.num_epochs = 120.0  # Epochs of train_split.
  config.learning_rate = 0.05  # Peak rate, half the base's: NiN has no BatchNorm.
  config.warmup_epochs = 2.0  # Linear warmup epochs.
  config.weight_decay = 1e-4  # L2 on kernels; the base uses 5e-4.
  return config
