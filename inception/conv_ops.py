"""Convolution and pooling kernels with a selectable implementation.

``impl`` is one of:
  * ``'xla'``: ``lax.conv_general_dilated`` / ``lax.reduce_window``.
  * ``'auto'``: picks per backend (XLA everywhere for now).
"""
import jax.numpy as jnp
from jax import lax

IMPLS = ('auto', 'xla')


def _check(impl):
  if impl not in IMPLS:
    raise ValueError(f'conv_impl must be one of {IMPLS}, got {impl!r}')


def conv2d(x, kernel, strides: int, padding, impl: str = 'auto'):
  """NHWC x HWIO convolution."""
  _check(impl)
  del impl
  return lax.conv_general_dilated(
      x, kernel, (strides, strides), padding,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def max_pool(x, window: int, strides: int, padding, impl: str = 'auto'):
  """Square max pooling over H and W of an NHWC array."""
  _check(impl)
  del impl
  if not isinstance(padding, str):
    padding = ((0, 0),) + tuple(padding) + ((0, 0),)
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, window, window, 1),
                           (1, strides, strides, 1), padding)
