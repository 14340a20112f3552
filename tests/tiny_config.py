"""The end-to-end tests' config: configs/quickstart.py with a compile-light model.

The loop, data, checkpoint, sweep and fault tests exercise machinery, not the
network, so they train NiN at 1/16 width with BatchNorm (nine convolutions,
dropout, batch statistics): it compiles about 4x faster than the quickstart
GoogLeNet (55 convolutions). tests/test_train.py still trains the quickstart
model itself once.

  python train.py --config tests/tiny_config.py --workdir /tmp/t
"""
import ml_collections

from configs import quickstart


def get_config():
  """Returns the quickstart config with the tiny NiN."""
  config = quickstart.get_config()
  config.model = ml_collections.ConfigDict()
  config.model.name = 'nin_cifar_tiny'  # NiN at 1/16 width (inception.models.networks).
  config.model.num_classes = 10  # The digits' ten classes.
  config.model.bottleneck = True  # False removes the hidden 1x1 layers.
  config.model.width = 1.0  # On top of the registry's 1/16.
  config.model.use_bn = True  # BatchNorm after every conv: batch_stats in the state.
  return config
