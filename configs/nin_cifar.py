"""Network in Network on CIFAR-10, the paper's recipe adapted.

Lin et al. trained the public Caffe model with SGD momentum 0.9, weight decay
1e-4, dropout 0.5 and a learning rate divided by 10 on plateaus; no BatchNorm,
no augmentation beyond global contrast normalisation / ZCA. Here: the same
network and regulariser, SGD + Nesterov, lr 0.05 with warmup + cosine over 120
epochs, and the standard pad-4 crop + flip augmentation instead of ZCA.

  python train.py --config configs/nin_cifar.py --workdir runs/nin

The paper reports 8.81% test error with augmentation (91.2% accuracy); not
measured here. In 300-step pilots (results/nin_paper_pilot) this network dies
within 100 steps at the ReLU on its class maps (loss log 10, gradient ~0.01);
with ``--config.model.classifier_relu=False`` the same run learns.

Args (``--config configs/nin_cifar.py:ARGS``, comma separated):
  naive: removes the hidden 1x1 layers (the ablation).
  bn: BatchNorm after every convolution (``model.use_bn``); not the paper's.
  cpu: a short bf16 recipe with BatchNorm and no dropout, sized for ~45
    minutes on a 2-core CPU (results/nin_cpu); ``--config.model.use_bn=False``
    runs the paper's network on it.
  ablation: the NiN ablation's protocol (configs/sweeps/nin_ablation.py,
    results/nin_ablation), frozen: the cpu recipe at 8 epochs in float32;
    each family's peak lr and width come from the sweep.
"""
from configs import base


def get_config(arg: str = ''):
  """Returns the config; ``arg``: comma-separated {naive, bn, cpu, ablation}."""
  args = set(filter(None, arg.split(',')))
  unknown = args - {'naive', 'bn', 'cpu', 'ablation'}
  if unknown:
    raise ValueError(f'unknown config args {sorted(unknown)}; use naive, bn, '
                     'cpu, ablation')
  if 'ablation' in args:
    args.add('cpu')
  config = base.get_config()
  config.model.name = 'nin_cifar'  # The public Caffe model, 966,986 params.
  config.model.bottleneck = 'naive' not in args  # 'naive' drops the hidden 1x1 layers.
  config.model.dropout_rate = 0.5  # Dropout after the first two mlpconv blocks.
  config.model.classifier_relu = True  # The public model's ReLU on the class maps (False: none).
  config.num_epochs = 120.0  # Epochs of train_split.
  config.learning_rate = 0.05  # Peak rate, half the base's: NiN has no BatchNorm.
  config.warmup_epochs = 2.0  # Linear warmup epochs.
  config.weight_decay = 1e-4  # L2 on kernels; the base uses 5e-4.
  config.model.use_bn = bool(args & {'bn', 'cpu'})  # BatchNorm after every conv: not in the paper.
  if 'cpu' in args:
    config.dtype = 'bfloat16'  # GEMM operands; measured faster for NiN on AMX and AVX512_BF16.
    config.batch_size = 128  # As in the base recipe.
    config.num_epochs = 11  # Sized to end in ~45-50 minutes on 2 cores.
    config.model.dropout_rate = 0.0  # Short runs underfit: dropout 0.5 cost 10 points at epoch 2.
    config.weight_decay = 5e-4  # As in the base recipe: BatchNorm, no dropout.
    config.schedule = 'onecycle'  # Short runs: warm up to the peak, anneal to ~0.
    config.learning_rate = 0.2  # One-cycle peak; BatchNorm takes the base's rate.
    config.label_smoothing = 0.1  # As in GoogLeNet-CIFAR's cpu recipe.
    config.eval_flip = True  # Flip test-time augmentation.
    config.ema_decay = 0.99  # Evaluate an EMA of the weights.
    config.eval_every_epochs = 1.0  # One point per epoch on the curve.
    config.checkpoint_every_steps = 400  # A few minutes at risk on preemption.
  if 'ablation' in args:  # The ablation sweep's recipe: a re-run resumes it.
    config.num_epochs = 8  # Every arm alike; fits the sweep's ~4 CPU-hours.
    config.learning_rate = 0.2  # Replaced by each family's tuned peak.
    config.dtype = 'float32'  # Full speed on every CPU kind; bf16 lacks kernels on AVX2.
  return config
