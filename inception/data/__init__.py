"""Input: sources (TFDS, image folders, embedded digits), transforms, pipelines.

``inception.data`` is the data API (``loader``): ``parse(config)`` reads the
config's data fields once into a ``DataSpec``; ``get_info``,
``train_batches`` and ``eval_batches`` take that spec (and, for global
``jax.Array`` batches, a sharding). Submodules: ``sources``
(where images come from), ``tfds_source``, ``transforms`` (crops, flips,
resizing), ``pipeline`` (grain and tf.data streams), ``batch_augment`` and
``randaugment`` (on-device augmentation in the train step), ``tf_quiet``.
"""
from inception.data.loader import (DatasetInfo, DataSpec, clear_caches,
                                   eval_batches, get_info, global_batch,
                                   parse, steps_per_epoch, train_batches)

__all__ = ['DatasetInfo', 'DataSpec', 'clear_caches', 'eval_batches',
           'get_info', 'global_batch', 'parse', 'steps_per_epoch',
           'train_batches']
