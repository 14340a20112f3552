"""PyTorch twins of the CIFAR models, a flax -> torch loader, a train step.

Used by ``benchmarks/throughput.py`` (the PyTorch baseline) and by
``tests/test_torch_oracle.py`` (an independent implementation of the same
networks: equal logits on equal weights). Modules carry the flax module names
(``mlpconv1.conv0.conv``, ``inception_3a.branch3x3_reduce.bn``, ``fc``), so
the loader maps a flax variable path to a torch module by name alone.

Layouts: flax conv kernels are HWIO, torch's OIHW; flax ``Dense`` kernels are
(in, out), ``nn.Linear`` weights (out, in). BatchNorm ``momentum`` is 0.9 in
flax and 0.1 in torch (the same update). One known training-mode difference,
irrelevant to timing and to eval: torch updates ``running_var`` with the
unbiased batch variance, flax with the biased one.

Every module works on ``torch.channels_last`` tensors; the throughput
benchmark runs them that way (NHWC storage, as in the JAX models).
"""
import collections.abc

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from inception.training import specs
from inception.models.layers import scale_width
from inception.models.networks import MODELS, TABLE1

STAGES = ('3a', '3b', '4a', '4b', '4c', '4d', '4e', '5a', '5b')


class ConvBN(nn.Module):
  """kxk conv (padding k // 2), optional BatchNorm, optional ReLU.

  As in flax's ``ConvBN``, the conv has a bias only without BatchNorm.
  """

  def __init__(self, cin, cout, kernel_size, use_bn=True, relu=True):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2,
                          bias=not use_bn)
    self.bn = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1) if use_bn else None
    self.relu = relu

  def forward(self, x):
    x = self.conv(x)
    if self.bn is not None:
      x = self.bn(x)
    # In place is safe: neither conv nor BatchNorm backward reads its output.
    return F.relu(x, inplace=True) if self.relu else x


class SamePool2d(nn.Module):
  """Pooling with TensorFlow/flax ``'SAME'`` padding, at any input size.

  SAME pads ``total = (ceil(n / s) - 1) * s + k - n`` with the odd element on
  the high side. Torch pools pad symmetrically, but ``padding=lo`` with
  ``ceil_mode=True`` adds exactly one more window on the high side when
  ``total`` is odd, and changes nothing when it is even (``total > 0`` makes
  the division exact). Padded taps never count: max pools ignore them and
  the average pool is built with ``count_include_pad=False``, as in flax.
  """

  def __init__(self, kind, kernel_size=3, stride=2):
    super().__init__()
    if kernel_size < stride:
      raise ValueError('SamePool2d needs kernel_size >= stride')
    self.kind, self.k, self.s = kind, kernel_size, stride

  def _low_pad(self, n):
    total = (-(-n // self.s) - 1) * self.s + self.k - n
    return total // 2

  def forward(self, x):
    pad = (self._low_pad(x.shape[-2]), self._low_pad(x.shape[-1]))
    if self.kind == 'max':
      return F.max_pool2d(x, self.k, self.s, pad, ceil_mode=True)
    return F.avg_pool2d(x, self.k, self.s, pad, ceil_mode=True,
                        count_include_pad=False)


class MlpConv(nn.Module):
  """NiN mlpconv: kxk conv ``conv0``, then 1x1 convs ``cccp1``, ``cccp2``..."""

  def __init__(self, cin, features, kernel_size, use_bn=False,
               final_relu=True):
    super().__init__()
    self.names = []
    last = len(features) - 1
    for i, f in enumerate(features):
      name = f'conv{i}' if i == 0 else f'cccp{i}'
      self.add_module(name, ConvBN(cin, f, kernel_size if i == 0 else 1,
                                   use_bn, relu=final_relu or i < last))
      self.names.append(name)
      cin = f

  def forward(self, x):
    for name in self.names:
      x = getattr(self, name)(x)
    return x


class TorchNiN(nn.Module):
  """``inception.models.networks.NiN`` in PyTorch (same options, widths and rounding)."""

  def __init__(self, num_classes=10, bottleneck=True, width=1.0,
               dropout_rate=0.5, use_bn=False, classifier_relu=True):
    super().__init__()
    s = lambda c: scale_width(c, width)
    blocks = [((s(192), s(160), s(96)), 5), ((s(192), s(192), s(192)), 5),
              ((s(192), s(192), num_classes), 3)]
    cin = 3
    for i, (features, k) in enumerate(blocks):
      if not bottleneck:
        features = features[:1] + (features[-1:] if i == 2 else ())
      self.add_module(f'mlpconv{i + 1}', MlpConv(
          cin, features, k, use_bn, final_relu=i < 2 or classifier_relu))
      cin = features[-1]
    self.pool1 = SamePool2d('max')
    self.pool2 = SamePool2d('avg')
    self.dropout = nn.Dropout(dropout_rate)

  def forward(self, x):
    x = self.dropout(self.pool1(self.mlpconv1(x)))
    x = self.dropout(self.pool2(self.mlpconv2(x)))
    return self.mlpconv3(x).mean((2, 3))


class InceptionBlock(nn.Module):
  """``inception.models.layers.InceptionBlock``: 1x1 | 3x3 | 5x5 | pool branches."""

  def __init__(self, cin, widths, bottleneck=True, pool_proj=True,
               use_bn=True):
    super().__init__()
    w = widths
    self.branch1x1 = ConvBN(cin, w.c1x1, 1, use_bn)
    c3 = c5 = cin
    if bottleneck:
      self.branch3x3_reduce = ConvBN(cin, w.c3x3_reduce, 1, use_bn)
      c3 = w.c3x3_reduce
    self.branch3x3 = ConvBN(c3, w.c3x3, 3, use_bn)
    if bottleneck:
      self.branch5x5_reduce = ConvBN(cin, w.c5x5_reduce, 1, use_bn)
      c5 = w.c5x5_reduce
    self.branch5x5 = ConvBN(c5, w.c5x5, 5, use_bn)
    self.pool = nn.MaxPool2d(3, 1, 1)
    self.pool_proj = ConvBN(cin, w.pool_proj, 1, use_bn) if pool_proj else None
    self.bottleneck = bottleneck
    self.out_channels = (w.c1x1 + w.c3x3 + w.c5x5 +
                         (w.pool_proj if pool_proj else cin))

  def forward(self, x):
    b1 = self.branch1x1(x)
    b3 = self.branch3x3_reduce(x) if self.bottleneck else x
    b3 = self.branch3x3(b3)
    b5 = self.branch5x5_reduce(x) if self.bottleneck else x
    b5 = self.branch5x5(b5)
    bp = self.pool(x)
    if self.pool_proj is not None:
      bp = self.pool_proj(bp)
    return torch.cat([b1, b3, b5, bp], 1)


class TorchGoogLeNetCIFAR(nn.Module):
  """``inception.models.networks.GoogLeNetCIFAR`` in PyTorch (no auxiliary heads)."""

  def __init__(self, num_classes=10, bottleneck=True, pool_proj=True,
               width=1.0, use_bn=True, dropout_rate=0.0, aux_logits=False):
    super().__init__()
    if aux_logits:
      raise NotImplementedError('TorchGoogLeNetCIFAR has no auxiliary heads')
    cin = scale_width(192, width)
    self.stem = ConvBN(3, cin, 3, use_bn)
    self.stage_pool = nn.MaxPool2d(3, 2, 1)
    for stage in STAGES:
      block = InceptionBlock(cin, TABLE1[stage].scaled(width), bottleneck,
                             pool_proj, use_bn)
      self.add_module(f'inception_{stage}', block)
      cin = block.out_channels
    self.dropout = nn.Dropout(dropout_rate)
    self.fc = nn.Linear(cin, num_classes)

  def forward(self, x):
    x = self.stem(x)
    for stage in STAGES:
      if stage in ('4a', '5a'):
        x = self.stage_pool(x)
      x = getattr(self, f'inception_{stage}')(x)
    return self.fc(self.dropout(x.mean((2, 3))))


_CLASSES = {'nin_cifar': TorchNiN, 'nin_cifar_tiny': TorchNiN,
            'googlenet_cifar': TorchGoogLeNetCIFAR,
            'googlenet_cifar_tiny': TorchGoogLeNetCIFAR}


def torch_model_for(name, **kwargs):
  """The torch twin of ``inception.models.networks.get_model(name, **kwargs)``.

  ``dtype``, ``activation_dtype`` and ``conv_impl`` are accepted and ignored
  (torch's precision is chosen with ``torch.autocast``), so ``specs.model_spec(config).kwargs`` can be
  passed as is. ``width`` is scaled by the registry's ``width_scale`` with the
  same arithmetic as ``get_model``, so tiny variants round identically.
  """
  if name not in _CLASSES:
    raise ValueError(f'no torch model for {name!r}; have {sorted(_CLASSES)}')
  if kwargs.pop('separable', False):
    raise NotImplementedError('the torch twins have no separable variant')
  kwargs = {k: v for k, v in kwargs.items()
            if k not in ('dtype', 'activation_dtype', 'conv_impl')}
  kwargs['width'] = kwargs.get('width', 1.0) * MODELS[name].width_scale
  return _CLASSES[name](**kwargs)


def param_count(model):
  """Trainable parameters (flax's ``params`` collection counts the same)."""
  return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _flatten(tree, prefix=()):
  for key, value in tree.items():
    if isinstance(value, collections.abc.Mapping):
      yield from _flatten(value, prefix + (key,))
    else:
      yield prefix + (key,), value


def load_flax_variables(model, variables):
  """Copies flax ``params`` and ``batch_stats`` into ``model`` in place.

  Args:
    model: a torch twin built with the same options as the flax model.
    variables: ``{'params': ..., 'batch_stats': ...}`` of the flax model.

  Raises:
    ValueError: a flax variable has no torch counterpart, shapes differ, or a
      torch parameter or running statistic was left unassigned.
  """
  leaf_names = {
      (nn.Conv2d, 'kernel'): 'weight', (nn.Conv2d, 'bias'): 'bias',
      (nn.Linear, 'kernel'): 'weight', (nn.Linear, 'bias'): 'bias',
      (nn.BatchNorm2d, 'scale'): 'weight', (nn.BatchNorm2d, 'bias'): 'bias',
      (nn.BatchNorm2d, 'mean'): 'running_mean',
      (nn.BatchNorm2d, 'var'): 'running_var',
  }
  leaves = list(_flatten(variables['params']))
  leaves += list(_flatten(variables.get('batch_stats', {})))
  assigned = set()
  with torch.no_grad():
    for path, value in leaves:
      module_name = '.'.join(path[:-1])
      try:
        module = model.get_submodule(module_name)
      except AttributeError as e:
        raise ValueError(f'no torch module for flax {"/".join(path)}') from e
      attr = leaf_names.get((type(module), path[-1]))
      if attr is None:
        raise ValueError(f'cannot map flax {"/".join(path)} onto '
                         f'{type(module).__name__}')
      value = np.array(value, np.float32)  # a writable copy for torch
      if path[-1] == 'kernel':
        # HWIO -> OIHW; a Dense (in, out) kernel -> (out, in).
        value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
      target = getattr(module, attr)
      if tuple(target.shape) != value.shape:
        raise ValueError(f'flax {"/".join(path)} has shape {value.shape}, '
                         f'torch {module_name}.{attr} {tuple(target.shape)}')
      target.copy_(torch.from_numpy(np.ascontiguousarray(value)))
      assigned.add(f'{module_name}.{attr}')
  expected = {n for n, _ in model.named_parameters()}
  expected |= {n for n, _ in model.named_buffers()
               if n.endswith(('running_mean', 'running_var'))}
  missing = sorted(expected - assigned)
  if missing:
    raise ValueError(f'torch variables not in the flax tree: {missing[:5]}')
  return model


def make_train_step(model, *, learning_rate, momentum, nesterov, weight_decay,
                    mean, std, autocast_dtype=None):
  """``step(images_uint8, labels) -> loss``: one SGD step, like the JAX one.

  Mirrors ``inception.training.steps.make_train_step`` + ``inception.training.build.optimizer``:
  uint8 input normalised in the step, softmax cross-entropy, coupled L2 on
  conv/linear weights only (flax's ``kernel`` leaves, the ``decay_mask``),
  SGD with (Nesterov) momentum at a constant rate (the schedule costs nothing
  to speak of). The JAX step also computes accuracy, the gradient norm and a
  finite check; these are a few small reductions.

  Args:
    model: a torch module in train mode, ideally ``channels_last``.
    learning_rate, momentum, nesterov, weight_decay: the SGD settings.
    mean, std: per-channel normalisation on the [0, 255] scale.
    autocast_dtype: e.g. ``torch.bfloat16`` to run forward under
      ``torch.autocast('cpu', ...)``; None for float32.
  """
  decay = [p for p in model.parameters() if p.ndim > 1]
  rest = [p for p in model.parameters() if p.ndim <= 1]
  opt = torch.optim.SGD([{'params': decay, 'weight_decay': weight_decay},
                         {'params': rest, 'weight_decay': 0.0}],
                        lr=learning_rate, momentum=momentum,
                        nesterov=bool(nesterov and momentum))
  mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
  std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
  model.train()

  def step(images, labels):
    x = (images.float() - mean) / std
    with torch.autocast('cpu', dtype=autocast_dtype or torch.bfloat16,
                        enabled=autocast_dtype is not None):
      logits = model(x)
    loss = F.cross_entropy(logits.float(), labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()

  return step


def gemm_runner(n: int):
  """A closure running an n x n x n bf16 ``torch.mm`` (oneDNN underneath)."""
  a, b = torch.randn(2, n, n).to(torch.bfloat16)
  torch.mm(a, b)
  return lambda: torch.mm(a, b)


def torch_runners(config, host_variables, images, labels, n_params, *, mean,
                  std, threads, bf16=True):
  """Torch float32 and bf16-autocast training steps on the flax initial weights.

  Args:
    config: the experiment config (model, optimizer fields).
    host_variables: the flax ``params`` and ``batch_stats`` on the host.
    images, labels: one uint8 NHWC batch and its int labels (numpy).
    n_params: flax's parameter count, which the twin must match.
    mean, std: per-channel input statistics.
    threads: torch's intra-op thread count.
    bf16: also the bf16-autocast step.

  Returns:
    label -> a closure that runs one step.
  """
  torch.set_num_threads(threads)
  x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(
      memory_format=torch.channels_last)
  y = torch.from_numpy(labels.astype(np.int64))
  runners = {}
  twins = [('torch float32', None)]
  twins += [('torch bf16 autocast', torch.bfloat16)] if bf16 else []
  for label, dtype in twins:
    model = torch_model_for(config.model.name,
                            **specs.model_spec(config).kwargs)
    load_flax_variables(model, host_variables)
    count = param_count(model)
    assert count == n_params, f'torch has {count} params, flax {n_params}'
    model = model.to(memory_format=torch.channels_last)
    step = make_train_step(
        model, learning_rate=config.learning_rate, momentum=config.momentum,
        nesterov=config.nesterov, weight_decay=config.weight_decay, mean=mean,
        std=std, autocast_dtype=dtype)
    runners[label] = lambda step=step: step(x, y)
  return runners
