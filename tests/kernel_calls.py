"""One ``conv_impl``'s kernels called as functions: the kernel tests' shorthand."""
from inception.kernels import backend


def conv2d(x, kernel, strides, padding, impl, compute_dtype=None):
  return backend.resolve(impl, compute_dtype).conv2d(x, kernel, strides,
                                                      padding)


def pointwise(x, kernel, impl, compute_dtype=None):
  return backend.resolve(impl, compute_dtype).pointwise(x, kernel)


def depthwise_conv2d(x, kernel, strides, padding, impl):
  return backend.resolve(impl).depthwise(x, kernel, strides, padding)


def max_pool(x, window, strides, padding, impl):
  return backend.resolve(impl).max_pool(x, window, strides, padding)


def uses_onednn(impl):
  return backend.resolve(impl).onednn
