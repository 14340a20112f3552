"""Which kernels run the convolutions, pooling and BatchNorm.

XLA's own, im2col GEMMs and depthwise/pooling kernels tuned for XLA:CPU, and
the optional oneDNN binding. Kernels know nothing of models, data or configs.
"""
