"""1x1 convolutions in JAX/Flax: NiN and GoogLeNet on GEMM-based reductions."""
