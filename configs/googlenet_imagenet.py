"""GoogLeNet (Inception-v1) on ImageNet with the paper's recipe.

Szegedy et al. 2014: SGD momentum 0.9, learning rate decreased by 4% every 8
epochs, auxiliary classifiers weighted 0.3, dropout 0.4, inception-style crops
(8%-100% of the area, aspect ratio 3/4-4/3) and horizontal flips. The paper
gives no learning rate or weight decay; 0.01 and 2e-4 are those of the BVLC
Caffe reproduction. The paper reports 10.07% top-5 error for one model and one
crop (Table 3); this config evaluates one model on one center crop.

  python train.py --config configs/googlenet_imagenet.py --workdir runs/gnet \
      --config.data_dir=/path/to/tensorflow_datasets

Needs the prepared TFDS ``imagenet2012`` dataset; not run in this repository.
"""
from configs import base


def get_config():
  """Returns the config."""
  config = base.get_config()
  config.model.name = 'googlenet'  # Table 1's network.
  config.model.num_classes = 1000  # ILSVRC-2012 classes.
  config.model.pool_proj = True  # False: the max-pool branch is not projected by a 1x1.
  config.model.aux_logits = True  # The two auxiliary classifiers on 4a and 4d.
  config.model.separable = False  # True: 3x3/5x5 branches are depthwise kxk + pointwise 1x1.
  config.model.use_bn = False  # The paper's network has no BatchNorm.
  config.dataset = 'imagenet2012'  # Prepared TFDS data; streamed, one shard per host.
  config.train_split = 'train'  # The full training set.
  config.eval_split = 'validation'  # The 50,000-image validation set.
  config.image_size = 224  # The paper's input size.
  config.augment = 'imagenet'  # Inception crops (8%-100% area) + flips; center crop for eval.
  config.batch_size = 256  # Global batch over all devices and hosts.
  config.num_epochs = 250.0  # Epochs of the training set.
  config.optimizer = 'sgd'  # Asynchronous SGD in the paper; synchronous here.
  config.nesterov = False  # Plain momentum 0.9, as in the paper.
  config.learning_rate = 0.01  # BVLC reproduction (the paper gives none).
  config.schedule = 'exponential'  # Decay by decay_rate every decay_epochs.
  config.warmup_epochs = 0.0  # The paper has no warmup.
  config.weight_decay = 2e-4  # BVLC reproduction.
  config.aux_loss_weight = 0.3  # Section 5: auxiliary losses weighted 0.3.
  config.log_every_steps = 100  # Steps are many; log less often.
  config.checkpoint_every_steps = 5000  # Steps between checkpoints.
  return config
