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
  config.model.name = 'googlenet'
  config.model.num_classes = 1000
  config.model.pool_proj = True  # False: the max-pool branch is not projected by a 1x1.
  config.model.aux_logits = True  # The two auxiliary classifiers on 4a and 4d.
  config.model.use_bn = False  # The paper's network has no BatchNorm.
  config.dataset = 'imagenet2012'
  config.train_split = 'train'
  config.eval_split = 'validation'
  config.image_size = 224
  config.augment = 'imagenet'
  config.batch_size = 256
  config.num_epochs = 250.0
  config.optimizer = 'sgd'
  config.nesterov = False
  config.learning_rate = 0.01
  config.schedule = 'exponential'
  config.warmup_epochs = 0.0
  config.weight_decay = 2e-4
  config.aux_loss_weight = 0.3
  config.log_every_steps = 100
  config.checkpoint_every_steps = 5000
  return config
