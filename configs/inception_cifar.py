"""GoogLeNet-CIFAR on CIFAR-10 with the standard CIFAR recipe.

SGD + Nesterov 0.9, peak lr 0.1, 1 epoch warmup then cosine, weight decay 5e-4
on kernels only, batch 128, 200 epochs, pad-4 crop + flip. Validation is
train[90%:] (the test split is not used).

  python train.py --config configs/inception_cifar.py --workdir runs/gcifar

Target: about 95% accuracy on GPU, the figure published for this network with
this recipe (kuangliu/pytorch-cifar: 95.04% on the test split); not measured in
this repository, which has no accelerator.

Args (``--config configs/inception_cifar.py:ARGS``, comma separated):
  naive: the paper's naive Inception module (bottleneck=False, pool_proj=False).
  cpu: a narrow, short variant sized for a 2-core CPU (see get_config).
"""
from configs import base


def get_config(arg: str = ''):
  """Returns the config; ``arg`` is a comma-separated subset of {naive, cpu}."""
  args = set(filter(None, arg.split(',')))
  unknown = args - {'naive', 'cpu'}
  if unknown:
    raise ValueError(f'unknown config args {sorted(unknown)}; use naive, cpu')
  config = base.get_config()
  config.model.name = 'googlenet_cifar'
  config.model.pool_proj = True  # False: the max-pool branch is not projected by a 1x1.
  config.model.aux_logits = False  # No auxiliary classifiers at CIFAR scale.
  if 'naive' in args:
    config.model.bottleneck = False
    config.model.pool_proj = False
  if 'cpu' in args:
    config.model.width = 0.125
    config.batch_size = 256
    config.num_epochs = 5.5
    config.schedule = 'onecycle'
    config.learning_rate = 0.3
    config.label_smoothing = 0.1
    config.eval_every_epochs = 1.0
    config.checkpoint_every_steps = 200
  return config
