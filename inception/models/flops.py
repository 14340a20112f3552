"""Exact parameter and multiply-add (MAC) accounting, cross-checked with XLA.

* Params: trainable weights and biases, plus BatchNorm scale and offset.
* MACs: multiply-adds of convolutions and dense layers per image, the unit the
  NiN and GoogLeNet papers call "ops". FLOPs = 2 x MACs.

The totals are cross-checked against XLA's own count of the forward pass,
``jax.jit(f).lower(...).cost_analysis()['flops']``, which differs from 2 x
MACs in two known ways that are computed here, not guessed:
  * XLA skips the taps that fall on zero padding (``padding_macs``);
  * XLA also counts elementwise work: bias adds, ReLU, BatchNorm, pooling,
    the global average (``other_flops``).

The command line is ``python flops.py`` (``inception.cli.flops``).
"""
import contextlib
import dataclasses
import threading
from typing import Any

import flax.linen as nn
from flax.core import scope as flax_scope
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from inception.kernels import batchnorm
from inception.models import layers


@dataclasses.dataclass
class Layer:
  """One MAC- or parameter-carrying layer."""
  name: str
  kind: str
  output_shape: tuple[int, ...]
  params: int
  macs: int
  valid_macs: int  # MACs excluding taps on zero padding (what XLA counts).
  train_only: bool = False  # e.g. GoogLeNet's auxiliary classifiers.


@dataclasses.dataclass
class Block:
  """A top-level block (a row of the paper's Table 1)."""
  name: str
  kind: str
  output_shape: tuple[int, ...]
  widths: Any = None
  params: int = 0
  macs: int = 0


@dataclasses.dataclass
class Report:
  """Per-layer accounting of one model at one input shape."""
  model: str
  input_shape: tuple[int, ...]
  layers: list[Layer]
  blocks: list[Block]
  params: int
  xla_flops: float | None = None

  @property
  def macs(self) -> int:
    """Inference MACs per image (training-only heads excluded, as in Table 1)."""
    return sum(l.macs for l in self.layers if not l.train_only)

  @property
  def train_only_params(self) -> int:
    return sum(l.params for l in self.layers if l.train_only)

  @property
  def inference_params(self) -> int:
    return self.params - self.train_only_params

  @property
  def flops(self) -> int:
    return 2 * self.macs

  @property
  def padding_macs(self) -> int:
    return sum(l.macs - l.valid_macs for l in self.layers if not l.train_only)

  @property
  def other_flops(self) -> float | None:
    """XLA FLOPs not explained by 2 x (MACs - padding_macs): elementwise ops."""
    if self.xla_flops is None:
      return None
    return self.xla_flops - 2 * (self.macs - self.padding_macs)

  def to_json(self) -> dict:
    return {
        'model': self.model, 'input_shape': list(self.input_shape),
        'params': self.params, 'inference_params': self.inference_params,
        'macs': self.macs, 'flops': self.flops,
        'xla_flops': self.xla_flops, 'padding_macs': self.padding_macs,
        'layers': [{'name': l.name, 'kind': l.kind,
                    'output_shape': list(l.output_shape),
                    'params': l.params, 'macs': l.macs,
                    'train_only': l.train_only} for l in self.layers],
    }


def _valid_taps(n: int, k: int, stride: int, pad_lo: int, out: int) -> int:
  """Kernel taps that land inside an input of length n, over all outputs."""
  starts = np.arange(out) * stride - pad_lo
  taps = np.arange(k)[None, :] + starts[:, None]
  return int(((taps >= 0) & (taps < n)).sum())


def _conv_row(module, x, y, kernel) -> tuple[str, int, int]:
  """(kind, MACs, MACs off the zero padding) of one convolution layer.

  A depthwise kernel is (k, k, 1, C): k*k*C MACs per output pixel.
  """
  kh, kw, cin, cout = kernel.shape
  out_h, out_w = y.shape[1:3]
  macs = out_h * out_w * kh * kw * cin * cout
  if kh == 1 and kw == 1:
    return 'conv1x1', macs, macs
  kind = f'conv{kh}x{kw}'
  if isinstance(module, layers.DepthwiseConv):
    kind = f'depthwise{kh}x{kw}'
  padding = getattr(module, 'padding', None)
  if padding is None:
    padding = ((kh // 2, kh // 2), (kw // 2, kw // 2))
  elif isinstance(padding, str):
    padding = lax.padtype_to_pads(x.shape[1:3], (kh, kw),
                                  (module.strides,) * 2, padding)
  valid = (_valid_taps(x.shape[1], kh, module.strides, padding[0][0], out_h) *
           _valid_taps(x.shape[2], kw, module.strides, padding[1][0], out_w))
  return kind, macs, valid * cin * cout


def _size(tree) -> int:
  return int(sum(np.prod(l.shape) for l in jax.tree.leaves(tree)))


def one_op_per_layer(model: nn.Module) -> nn.Module:
  """``model`` on XLA's kernels: no fused GEMMs, one op (and call) per layer."""
  kernels = getattr(model, 'kernels', None)
  return model.clone(kernels=kernels.portable()) if kernels else model


_ZERO_INIT = threading.local()  # .on: this thread's analysis is running
_ZERO_INIT_LOCK = threading.Lock()
_ZERO_INIT_USERS = [0]  # analyses running in any thread
_FLAX_PARAM = flax_scope.Scope.param


def _param(self, name, init_fn, *init_args, unbox=True, **init_kwargs):
  """``Scope.param`` that, inside ``_zero_initializers``, never traces init_fn."""
  shape = init_args[0] if init_args else None
  if (getattr(_ZERO_INIT, 'on', False) and not init_kwargs
      and isinstance(shape, tuple) and len(init_args) <= 2
      and all(isinstance(d, int) for d in shape)):
    dtype = init_args[1] if len(init_args) == 2 else jnp.float32
    init_fn = lambda rng, *_: jnp.zeros(shape, dtype)
  return _FLAX_PARAM(self, name, init_fn, *init_args, unbox=unbox,
                     **init_kwargs)


@contextlib.contextmanager
def _zero_initializers():
  """Parameters of the form ``init(key, shape[, dtype])`` are zeros here.

  The accounting reads only shapes, but an abstract init (and flax's shape
  check in every apply) traces each initializer's random draw, which is
  most of a trace's time; bisections trace hundreds of networks. Other
  threads keep flax's initializers.
  """
  with _ZERO_INIT_LOCK:
    _ZERO_INIT_USERS[0] += 1
    flax_scope.Scope.param = _param
  _ZERO_INIT.on = True
  try:
    yield
  finally:
    _ZERO_INIT.on = False
    with _ZERO_INIT_LOCK:
      _ZERO_INIT_USERS[0] -= 1
      if not _ZERO_INIT_USERS[0]:
        flax_scope.Scope.param = _FLAX_PARAM


def analyze(model: nn.Module, input_shape, name: str = '',
            xla: bool = True, trace_training: bool = True) -> Report:
  """Per-layer params and MACs of ``model`` on one image of ``input_shape``.

  Args:
    model: a flax module taking ``(x, train)``.
    input_shape: (H, W, C).
    name: label for the report.
    xla: also compute XLA's FLOP count of the forward pass.
    trace_training: also trace a training pass, which adds the
      training-only layers (e.g. auxiliary classifiers). Without it the
      inference MACs are the same and the report lacks those rows: for
      bisections, which only ask for ``Report.macs``.
  """
  with _zero_initializers():
    return _analyze(one_op_per_layer(model), input_shape, name, xla,
                    trace_training)


def _training_only(module: nn.Module) -> bool:
  """Whether ``module`` sits in a layer only training calls (``TRAINING_ONLY``).

  Init creates such layers (GoogLeNet's auxiliary classifiers) so that
  checkpoints hold them, but inference never runs them.
  """
  while isinstance(module, nn.Module):
    if getattr(type(module), 'TRAINING_ONLY', False):
      return True
    module = module.parent
  return False


def _analyze(model: nn.Module, input_shape, name: str, xla: bool,
             trace_training: bool) -> Report:
  x = jnp.zeros((1, *input_shape), jnp.float32)
  rows, blocks = {}, {}

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    mod = context.module
    if context.method_name != '__call__' or mod.scope is None:
      return out
    if not training and _training_only(mod):
      return out  # the training pass adds it, if traced
    path = '/'.join(mod.scope.path)
    if len(mod.scope.path) == 1 and path not in blocks:
      blocks[path] = Block(path, type(mod).__name__, tuple(out.shape[1:]),
                           getattr(mod, 'widths', None))
    params = mod.variables.get('params', {})
    if isinstance(mod, (layers.Conv1x1, layers.ConvKxK, layers.DepthwiseConv)):
      kind, macs, valid = _conv_row(mod, args[0], out, params['kernel'])
    elif isinstance(mod, (layers.Dense, nn.Dense)):
      kind = 'dense'
      macs = valid = int(np.prod(params['kernel'].shape) *
                         np.prod(args[0].shape[1:-1]))
    elif isinstance(mod, (batchnorm.BatchNorm, nn.BatchNorm)):
      kind, macs, valid = 'batchnorm', 0, 0
    else:
      return out
    if path not in rows:
      rows[path] = Layer(path, kind, tuple(out.shape[1:]), _size(params), macs,
                         valid, train_only=training)
    return out

  # The abstract init is the inference pass (train=False) that creates the
  # variables; a training pass then adds the training-only layers.
  with nn.intercept_methods(interceptor):
    training = False
    variables = jax.eval_shape(
        lambda: model.init(jax.random.key(0), x, train=False))
    if trace_training:
      training = True
      jax.eval_shape(lambda v: model.apply(
          v, x, train=True, mutable=True,
          rngs={'dropout': jax.random.key(0)}), variables)
  rows = list(rows.values())
  total = _size(variables['params'])
  assert not trace_training or total == sum(r.params for r in rows), \
      'a parameterised layer is unaccounted'
  for row in rows:
    block = blocks.get(row.name.split('/')[0])
    if block is not None and not row.train_only:
      block.params += row.params
      block.macs += row.macs
  report = Report(name or type(model).__name__, tuple(input_shape), rows,
                  list(blocks.values()), total)
  if xla:
    # XLA's own convolution and pooling ops, whose counts the padding and
    # elementwise terms explain (im2col would count padded taps as work).
    report.xla_flops = xla_flops(model, input_shape, variables)
  return report


def xla_flops(model: nn.Module, input_shape, variables=None) -> float:
  """XLA's FLOP count of one forward pass (batch 1, inference mode)."""
  x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
  if variables is None:
    variables = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros(x.shape), train=False))
  lowered = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(
      variables, x)
  return float(lowered.cost_analysis()['flops'])


def _fmt_shape(shape) -> str:
  return 'x'.join(str(d) for d in shape)


def summary_line(r: Report) -> str:
  """Params, MACs and the XLA cross-check of a report, in words."""
  lines = [f'**{r.model}** at {_fmt_shape(r.input_shape)}: params'
           f' {r.inference_params:,}; MACs {r.macs:,} per image'
           f' (FLOPs = 2 x MACs = {r.flops:,}).']
  if r.train_only_params:
    lines.append(f'Training adds {r.train_only_params:,} params in'
                 ' training-only layers (auxiliary classifiers), not counted'
                 ' above; they add no inference MACs.')
  if r.xla_flops is not None:
    lines.append(
        f'XLA forward FLOPs {r.xla_flops:,.0f} = 2 x (MACs - {r.padding_macs:,}'
        f' padding taps XLA skips) + {r.other_flops:,.0f} elementwise (bias,'
        f' ReLU, BatchNorm, pooling): {r.xla_flops / r.flops:.4f} of 2 x MACs.')
  return '\n'.join(lines)


def markdown_table(r: Report) -> str:
  """The paper's Table 1 style: one row per top-level block."""
  shown = [b for b in r.blocks if b.params or b.macs]  # skip training-only heads
  inception = any(b.kind == 'InceptionBlock' for b in shown)
  head = ['block', 'type', 'output size']
  if inception:
    head += ['#1x1', '#3x3 reduce', '#3x3', '#5x5 reduce', '#5x5', 'pool proj']
  head += ['params', 'MACs']
  out = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for b in shown:
    cells = [b.name, b.kind, _fmt_shape(b.output_shape)]
    if inception:
      cells += [str(w) for w in b.widths] if b.widths else [''] * 6
    out.append('| ' + ' | '.join(cells + [f'{b.params:,}', f'{b.macs:,}']) +
               ' |')
  out.append('| **total** |' + ' |' * (len(head) - 3) +
             f' **{r.inference_params:,}** | **{r.macs:,}** |')
  return '\n'.join(out) + '\n\n' + summary_line(r)


def markdown_layers(r: Report) -> str:
  """One row per convolution, dense or BatchNorm layer."""
  out = ['| layer | kind | output | params | MACs |', '|---|---|---|---|---|']
  out += [f'| {l.name} | {l.kind} | {_fmt_shape(l.output_shape)} |'
          f' {l.params:,} | {l.macs:,} |' for l in r.layers]
  return '\n'.join(out)


def markdown_compare(a: Report, b: Report, labels=('bottleneck', 'naive')) -> str:
  """Two variants side by side, block by block, with the MACs ratio b / a."""
  rows = {blk.name: blk for blk in b.blocks}
  out = [f'| block | output ({labels[0]}) | params | MACs | output ({labels[1]})'
         ' | params | MACs | MACs ratio |', '|---|---|---|---|---|---|---|---|']
  for x in a.blocks:
    y = rows.get(x.name)
    if y is None or not (x.params or x.macs or y.params or y.macs):
      continue
    ratio = f'{y.macs / x.macs:.2f}x' if x.macs else '-'
    out.append(f'| {x.name} | {_fmt_shape(x.output_shape)} | {x.params:,} |'
               f' {x.macs:,} | {_fmt_shape(y.output_shape)} | {y.params:,} |'
               f' {y.macs:,} | {ratio} |')
  out.append(f'| **total** | | **{a.inference_params:,}** | **{a.macs:,}** | |'
             f' **{b.inference_params:,}** | **{b.macs:,}** |'
             f' **{b.macs / a.macs:.2f}x** |')
  return '\n'.join(out)


def naive_overrides(model_name: str) -> dict:
  """Options that turn a model into its naive (no 1x1 reduction) variant."""
  from inception import models  # pylint: disable=g-import-not-at-top
  opts = models.model_options(model_name)
  return {k: False for k in ('bottleneck', 'pool_proj') if k in opts}


if __name__ == '__main__':
  # The library is not the command; say which one is rather than exit 0.
  import sys  # pylint: disable=g-import-not-at-top
  print('error: the FLOP accounting command is `python flops.py` (or '
        '`python -m inception.cli.flops`); inception.models.flops is its library',
        file=sys.stderr)
  sys.exit(2)
