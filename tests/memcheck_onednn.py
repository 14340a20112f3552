"""Every oneDNN handler at small shapes under valgrind's memcheck.

  make memcheck   # ~25 min on a 2-core CPU: too slow for make test

Runs the forward pass and both gradients of each handler (conv, conv + bias
with and without its ReLU, max and average pool, BatchNorm with and without
its ReLU) at the shapes that once crashed
(1x1 inputs under 5x5 and 7x7 kernels, batch 1, odd strides), and the NaN
guards with non-finite inputs and parameters, then, given
``--check LOG``, fails if memcheck reported any error whose stack passes
through oneDNN or these handlers. Errors elsewhere (glibc's loader,
protobuf, re2: known memcheck false positives in uninstrumented code) are
listed, not failed on.

valgrind emulates no AVX-512, so oneDNN sees an AVX2 CPU under it and has
no kernel for some bf16 primitives; those are skipped and listed (the f32
paths, the NaN guards' loops included, all run).
"""
import re
import sys

SHAPES = [(64, 1, 5, 1, 'SAME'), (1, 1, 7, 2, 'SAME'), (3, 2, 5, 1, 'SAME'),
          (2, 3, 7, 3, 'SAME'), (2, 3, 3, 2, ((0, 2), (2, 0))),
          (1, 5, 5, 3, 'VALID')]
OURS = re.compile(r'dnnl|inception_onednn|Inception', re.I)


def run_kernels():
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from inception.kernels import onednn  # pylint: disable=g-import-not-at-top
  assert onednn.available(), onednn.unavailable_reason()
  skipped = []

  def bf16_may_refuse(what, fn, *args):
    """Runs fn; a bf16 primitive oneDNN has no kernel for here is skipped."""
    try:
      jax.block_until_ready(jax.jit(fn)(*args))
    except (ValueError, jax.errors.JaxRuntimeError) as e:
      skipped.append(f'{what}: {str(e).splitlines()[0][:120]}')

  for n, size, k, s, p in SHAPES:
    x = jax.random.normal(jax.random.key(0), (n, size, size + 1, 3))
    w = jax.random.normal(jax.random.key(1), (k, k, 3, 4))
    jax.block_until_ready(jax.jit(jax.grad(lambda x, w, s=s, p=p: jnp.sum(
        jnp.sin(onednn.conv2d(x, w, s, p))), (0, 1)))(x, w))
    for relu in (False, True):
      jax.block_until_ready(jax.jit(jax.grad(
          lambda x, w, b, s=s, p=p, relu=relu: jnp.sum(jnp.sin(onednn.conv2d(
              x, w, s, p, bias=b, relu=relu))), (0, 1, 2)))(x, w, jnp.ones(4)))
    for pool in (onednn.max_pool, onednn.avg_pool):
      jax.block_until_ready(jax.jit(jax.grad(lambda x, s=s, pool=pool: jnp.sum(
          jnp.sin(pool(x, 3, s, 'SAME')))))(x))
    # The NaN guards' own loops: a NaN input to the max pool, a NaN kernel
    # and an infinite bias under the fused ReLU, in f32 and bf16.
    for dtype in (jnp.float32, jnp.bfloat16):
      run = (bf16_may_refuse if dtype == jnp.bfloat16 else
             lambda what, fn, *args: jax.block_until_ready(jax.jit(fn)(*args)))
      bad = x.at[0, 0, 0, 0].set(jnp.nan).astype(dtype)
      run(f'max pool {bad.shape} bf16',
          lambda x, s=s: onednn.max_pool(x, 3, s, 'SAME'), bad)
      run(f'conv {x.shape} * {w.shape} + bias, ReLU, bf16',
          lambda x, w, b, s=s, p=p, dtype=dtype: onednn.conv2d(
              x, w, s, p, compute_dtype=dtype, bias=b, relu=True),
          x.astype(dtype), w.at[0, 0, 0, 1].set(jnp.nan),
          jnp.ones(4).at[3].set(jnp.inf))
  x = jax.random.normal(jax.random.key(2), (2, 3, 3, 16))
  for relu in (False, True):
    jax.block_until_ready(jax.jit(jax.grad(lambda x, g, b, relu=relu: jnp.sum(
        jnp.sin(onednn.batch_norm(x, g, b, 1e-5, relu)[0])), (0, 1, 2)))(
            x, jnp.ones(16), jnp.zeros(16)))
  jax.block_until_ready(jax.jit(lambda x, g, b: onednn.batch_norm(
      x, g, b, 1e-5, True)[0])(x, jnp.ones(16).at[2].set(jnp.nan),
                               jnp.zeros(16)))
  for what in skipped:
    print('skipped (no oneDNN kernel on this ISA):', what)
  print('every handler ran')


def check(log_path: str) -> int:
  """0 if no memcheck error passes through oneDNN or the handlers."""
  with open(log_path) as f:
    log = f.read()
  ours, others = [], []
  for block in re.split(r'\n==\d+== \n', log):
    lines = [re.sub(r'^==\d+== ', '', l) for l in block.splitlines()
             if l.startswith('==')]
    if lines and re.match(r'(Invalid|Conditional|Use of uninit|Mismatched|'
                          r'Source and dest|Syscall)', lines[0]):
      (ours if OURS.search(block) else others).append(lines[:4])
  for lines in others:
    print('elsewhere:', ' | '.join(lines)[:200])
  for lines in ours:
    print('IN ONEDNN OR THE HANDLERS:', '\n  '.join(lines))
  print(f'{len(ours)} error(s) in oneDNN or the handlers, {len(others)} '
        'elsewhere')
  return 1 if ours or 'every handler ran' not in log else 0


if __name__ == '__main__':
  if len(sys.argv) == 3 and sys.argv[1] == '--check':
    sys.exit(check(sys.argv[2]))
  run_kernels()
