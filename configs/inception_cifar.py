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
  cpu: a narrow, short variant sized for a 2-core CPU: width 1/8 (95,010
    params, 23.2M MACs per image), batch 256, 5.5 one-cycle epochs with label
    smoothing. Measured on a 2-core CPU, on the JPEG copy of the training split
    (45,000 train / 5,000 validation), seed 0: validation accuracy 0.7808 after
    28.5 min of wall time, start-up included (0.4522 at 5.7 min, 0.5754 at
    10.7, 0.6752 at 21.0), with

      python train.py --config configs/inception_cifar.py:cpu \
          --config.dataset=folder:/tmp/cifar10 --config.train_split='train[:90%]' \
          --config.eval_split='train[90%:]' --workdir /tmp/c
      python benchmarks/time_to_accuracy.py --workdir /tmp/c
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
  config.model.separable = False  # True: 3x3/5x5 branches are depthwise kxk + pointwise 1x1.
  if 'naive' in args:
    config.model.bottleneck = False  # 3x3/5x5 branches read the block input.
    config.model.pool_proj = False  # Fig. 2(a): the pool branch passes through.
  if 'cpu' in args:
    config.model.width = 0.125  # 1/8 of every width: ~150-170 images/s here.
    config.batch_size = 256  # Larger batches amortise per-op cost on CPU.
    config.num_epochs = 5.5  # Ends inside a 30-minute budget on 2 cores.
    config.schedule = 'onecycle'  # Short runs: warm up to the peak, anneal to ~0.
    config.learning_rate = 0.3  # One-cycle peak.
    config.label_smoothing = 0.1  # Helps the short schedule generalise.
    config.eval_every_epochs = 1.0  # One point per ~5 min on the time curve.
    config.checkpoint_every_steps = 200  # ~5 min of work at risk on preemption.
  return config
