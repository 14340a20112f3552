"""Shared defaults for every experiment; variants import this and change a few fields.

Not runnable on its own: use one of the configs next to it, e.g.

  python train.py --config configs/inception_cifar.py --workdir runs/x
"""
import ml_collections


def get_config():
  """Returns the base ConfigDict; every field is documented inline."""
  config = ml_collections.ConfigDict()

  config.model = ml_collections.ConfigDict()
  config.model.name = 'googlenet_cifar'  # Registry name: inception.models.networks.MODELS.
  config.model.num_classes = 10  # Classifier width; must equal the dataset's class count.
  config.model.bottleneck = True  # False: 3x3/5x5 branches (NiN: hidden 1x1s) lose their 1x1 reductions.
  config.model.width = 1.0  # Multiplier on every hidden width (tiny models scale it further).

  # Data: a TFDS name, 'folder:/path' (path/<split>/<class>/<img>), or 'digits'.
  config.dataset = 'cifar10'  # The one string that picks the source.
  config.data_dir = ''  # TFDS data_dir; '' = the TFDS default (~/tensorflow_datasets).
  config.train_split = 'train[:90%]'  # TFDS-style slice; validation is carved from train.
  config.eval_split = 'train[90%:]'  # Held-out slice used for every reported accuracy.
  config.image_size = 32  # Images are conformed (resized / cropped) to this square size.
  config.channels = 3  # Images are converted to this many channels (grayscale <-> RGB).
  config.augment = 'cifar'  # 'cifar' (pad-4 crop + flip), 'imagenet' (inception crop + flip), 'none'.
  config.randaugment_num_ops = 0  # > 0: RandAugment (timm's increasing ops) with this many ops per image.
  config.randaugment_magnitude = 9.0  # RandAugment strength on timm's 0-10 scale.
  config.mixup_alpha = 0.0  # > 0: mixup, one Beta(alpha, alpha) ratio per batch (timm's batch mode).
  config.cutmix_alpha = 0.0  # > 0: CutMix, ratio ~ Beta(alpha, alpha), corrected to the box's area.
  config.mix_switch_prob = 0.5  # Both alphas > 0: the probability a batch gets CutMix rather than mixup.

  config.batch_size = 128  # Global batch over all devices and hosts.
  config.num_epochs = 200.0  # Training length in epochs of train_split.
  config.num_train_steps = -1  # When > 0, a cap on the number of steps (wins over num_epochs).

  config.optimizer = 'sgd'  # 'sgd' (momentum) or 'adamw'; both from optax.
  config.momentum = 0.9  # SGD momentum (adamw: b1).
  config.nesterov = True  # Nesterov momentum for SGD.
  config.learning_rate = 0.1  # Peak learning rate, for batch_size as set (no implicit scaling).
  config.schedule = 'cosine'  # 'cosine' (warmup + cosine), 'onecycle', 'exponential', 'constant'.
  config.warmup_epochs = 1.0  # Linear warmup length for 'cosine' / 'constant'.
  config.decay_epochs = 8.0  # 'exponential': decay the rate every this many epochs...
  config.decay_rate = 0.96  # ...by this factor (GoogLeNet: 4% every 8 epochs).
  config.weight_decay = 5e-4  # L2 on conv/dense kernels only; biases and BatchNorm are masked off.
  config.label_smoothing = 0.0  # Softmax cross-entropy label smoothing.
  config.grad_clip_norm = 0.0  # > 0: clip the gradient's global norm to this (optax.clip_by_global_norm).
  config.grad_accum_steps = 1  # The optimizer sees the mean gradient of this many micro-batches of batch_size / grad_accum_steps.
  config.aux_loss_weight = 0.3  # Weight of each auxiliary classifier's loss (GoogLeNet aux_logits).

  config.dtype = 'float32'  # GEMM operands: 'float32' or 'bfloat16' (accumulates in fp32).
  config.conv_impl = 'auto'  # conv / pool kernels: 'auto' (per backend), 'xla', 'gemm', 'onednn'.
  config.activation_dtype = 'auto'  # Between layers: 'auto' (bf16 only where measured to pay), 'float32', 'bfloat16'.

  config.seed = 0  # Seeds init, dropout and the data order; same seed -> same run.
  config.log_every_steps = 50  # Train metrics to metrics.jsonl / TensorBoard every N steps.
  config.stuck_windows = 5  # Warn when the loss sits at chance with a vanishing gradient this many log windows running (0: never).
  config.stop_when_stuck = False  # True: a stuck run stops (its checkpoint kept) instead of training on.
  config.eval_every_epochs = 1.0  # Evaluate on eval_split every this many epochs (and at the end).
  config.eval_flip = False  # Eval logits averaged over each image and its mirror (flip TTA).
  config.ema_decay = 0.0  # > 0: evaluate an EMA of the params and BatchNorm stats, this decay per step.
  config.checkpoint_every_steps = 1000  # Save a checkpoint every N steps (and at the end).
  config.keep_checkpoints = 3  # Number of most recent checkpoints kept on disk.
  config.init_from = ''  # Workdir or checkpoint dir to initialise params from (fine-tuning).
  return config
