"""The one place every config field's type and range is checked.

``check(config)`` runs first in ``specs.read``, before any data is loaded or
any file is written, and raises one ``UserError`` naming the field, its value
and what it accepts. Checks that need the data (class counts, split sizes) or
the devices (batch divisibility, where the kernels can run) follow in
``experiment.setup``.
"""
import math
import numbers

from inception.data import sources
from inception.kernels import backend
from inception.errors import UserError

DTYPES = ('float32', 'bfloat16')
AUGMENTS = sources.AUGMENTS
SCHEDULES = ('cosine', 'onecycle', 'exponential', 'constant')
OPTIMIZERS = ('sgd', 'adamw')
_SEED_LIMIT = 2**32  # jax.random.key takes a 32-bit seed without x64


def _is_int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _fail(field, value, wants):
  raise UserError(f'{field}={value!r} is invalid: {wants}')


def _int(config, field, low=None, high=None):
  v = _get(config, field)
  if not _is_int(v) or (low is not None and v < low) or (
      high is not None and v >= high):
    rng = (f' >= {low}' if low is not None else '') + (
        f' and < {high}' if high is not None else '')
    _fail(field, v, f'it must be an integer{rng}')


def _real(config, field, low=None, high=None, low_open=False,
          high_open=True):
  v = _get(config, field)
  ok = _is_real(v) and math.isfinite(v)
  if ok and low is not None:
    ok = v > low if low_open else v >= low
  if ok and high is not None:
    ok = v < high if high_open else v <= high
  if not ok:
    lo = '' if low is None else (f' > {low}' if low_open else f' >= {low}')
    hi = '' if high is None else (f' < {high}' if high_open else f' <= {high}')
    _fail(field, v, f'it must be a finite number{lo}{" and" if lo and hi else ""}'
          f'{hi}')


def _choice(config, field, choices):
  v = _get(config, field)
  if v not in choices:
    _fail(field, v, f'use one of {", ".join(map(str, choices))}')


def _str(config, field, empty_ok=False):
  v = _get(config, field)
  if not isinstance(v, str) or (not empty_ok and not v.strip()):
    _fail(field, v, 'it must be a non-empty string' if not empty_ok
          else 'it must be a string')


def _get(config, field):
  node = config
  for part in field.split('.'):
    try:
      node = node[part]
    except (KeyError, TypeError):
      raise UserError(
          f'the config has no field {field!r}; a config.json written by an '
          'older version lacks it: pass --config with the experiment\'s '
          'config file') from None
  return node


def check(config) -> None:
  """Raises a UserError for the first field of the wrong type or range."""
  _str(config, 'model.name')
  _real(config, 'model.width', 0, low_open=True)
  _int(config, 'model.num_classes', 1)
  _str(config, 'dataset')
  _str(config, 'data_dir', empty_ok=True)
  _str(config, 'train_split')
  _str(config, 'eval_split')  # every run ends with an evaluation
  _int(config, 'image_size', 8, 8193)
  _choice(config, 'channels', (1, 3))
  _choice(config, 'augment', AUGMENTS)
  _int(config, 'batch_size', 1)
  _int(config, 'num_train_steps')
  if config.num_train_steps <= 0:
    _real(config, 'num_epochs', 0, low_open=True)
  _choice(config, 'optimizer', OPTIMIZERS)
  _real(config, 'momentum', 0, 1)
  _real(config, 'learning_rate', 0)
  _choice(config, 'schedule', SCHEDULES)
  _real(config, 'warmup_epochs', 0)
  _real(config, 'decay_epochs', 0, low_open=True)
  _real(config, 'decay_rate', 0, 1, low_open=True, high_open=False)
  _real(config, 'weight_decay', 0)
  _real(config, 'label_smoothing', 0, 1)
  _real(config, 'grad_clip_norm', 0)
  _int(config, 'grad_accum_steps', 1)
  if config.batch_size % config.grad_accum_steps:
    _fail('grad_accum_steps', config.grad_accum_steps,
          f'it must divide batch_size={config.batch_size} (each micro-batch '
          'is batch_size / grad_accum_steps)')
  _real(config, 'mixup_alpha', 0)
  _real(config, 'cutmix_alpha', 0)
  _real(config, 'mix_switch_prob', 0, 1, high_open=False)
  if (config.mixup_alpha > 0 or config.cutmix_alpha > 0) and (
      config.batch_size % 2):
    _fail('batch_size', config.batch_size, 'mixup and CutMix mix images in '
          'pairs: it must be even')
  _int(config, 'randaugment_num_ops', 0)
  _real(config, 'randaugment_magnitude', 0, 10, high_open=False)
  _real(config, 'aux_loss_weight', 0)
  _choice(config, 'dtype', DTYPES)
  _choice(config, 'activation_dtype', ('auto',) + DTYPES)
  _choice(config, 'conv_impl', backend.IMPLS)  # where it runs: resolve()
  _int(config, 'seed', 0, _SEED_LIMIT)
  _int(config, 'log_every_steps', 1)
  _int(config, 'stuck_windows', 0)
  _choice(config, 'stop_when_stuck', (False, True))
  _real(config, 'eval_every_epochs', 0)
  _real(config, 'ema_decay', 0, 1)
  _int(config, 'checkpoint_every_steps', 1)
  _int(config, 'keep_checkpoints', 1)
  _str(config, 'init_from', empty_ok=True)
