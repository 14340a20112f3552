"""A run's inference function as a portable, serialised StableHLO program.

``export_model(workdir)`` restores a checkpoint and serialises, with
``jax.export`` (no TensorFlow), ``uint8 images [B, H, W, C] -> float32 logits
[B, classes]``: the dataset's normalisation, then the model in eval mode on
the checkpoint's eval variables (the EMA when the run keeps one, and the flip
test-time augmentation when its config has ``eval_flip``), exactly the logits
``eval.py`` scores. The weights are constants inside the program, so the file
is all a user needs:

  exported = jax.export.deserialize(open(path, 'rb').read())
  logits = exported.call(images)  # uint8 [B, H, W, C]

The batch dimension is symbolic (any B) unless a fixed ``batch_size`` is
asked for. The convolutions use XLA's kernels (``conv_impl='xla'``) whatever
the run trained with: oneDNN's are custom calls, which are not portable, and
``jax.export`` refuses to serialise any custom call without a compatibility
guarantee, so none can reach the file. Beside it, ``<file>.json`` records
what the program expects (input shape, class names, step).
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax import export as jax_export

from inception.training import evaluate, steps, workdir as workdir_lib
from inception.errors import UserError, first_line

EXPORT_DIR = 'export'  # under the run's workdir
SUFFIX = '.jax_export'
PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')  # what jax.export lowers for


def default_path(workdir: str, step: int) -> str:
  """``workdir/export/model_<step>.jax_export``."""
  return os.path.join(workdir, EXPORT_DIR, f'model_{step}{SUFFIX}')


def inference_fn(exp, state):
  """``images -> logits`` of ``state``'s eval variables, as the eval step.

  uint8 NHWC images in, float32 logits out; the variables are copied to the
  host, so they become constants of the traced program.
  """
  variables = jax.device_get(state.eval_variables())
  mean, std = np.asarray(exp.info.mean), np.asarray(exp.info.std)
  model, flip = exp.model, exp.specs.loop.eval_flip

  def infer(images):
    x = steps.normalize(images, mean, std)
    logits = model.apply(variables, x, train=False)
    if flip:  # as steps.make_eval_step
      logits = (logits + model.apply(variables, x[:, :, ::-1],
                                     train=False)) / 2
    return logits.astype(jnp.float32)

  return infer


def _check_workdir(workdir: str) -> None:
  if not os.path.isdir(workdir):
    raise UserError(f'{workdir} is not a directory; pass the --workdir of a '
                    'training run')
  if not os.path.exists(workdir_lib.path(workdir, workdir_lib.CONFIG)):
    raise UserError(f'{workdir} has no {workdir_lib.CONFIG}: not the '
                    'workdir of a training run; pass the one train.py wrote')


def _write(file: str, data: bytes) -> None:
  """Writes ``data`` to ``file`` atomically; UserError when it cannot."""
  try:
    os.makedirs(os.path.dirname(file) or '.', exist_ok=True)
    tmp = f'{file}.tmp'
    with open(tmp, 'wb') as f:
      f.write(data)
    os.replace(tmp, file)
  except OSError as e:
    raise UserError(f'cannot write {file} ({e.strerror}); choose another '
                    '--output') from None


def export_model(workdir: str, step: int | None = None,
                 output: str | None = None, batch_size: int | None = None,
                 platforms=None) -> dict:
  """Serialises a run's inference function (latest or ``step`` checkpoint).

  Args:
    workdir: the run's workdir; its checkpoints are only read (safe while it
      trains).
    step: the checkpoint step; None: the latest.
    output: the file to write; None: ``default_path(workdir, step)``.
    batch_size: a fixed batch size; None: a symbolic one (any batch).
    platforms: what to lower for, a subset of ``PLATFORMS``; None: this
      machine's backend. The program is traced once, here.

  Returns:
    ``path``, ``metadata_path``, ``step``, ``input`` and ``output`` (shape
    strings, ``batch`` for the symbolic dimension), ``platforms``, ``ema``
    and ``bytes``.

  Raises:
    UserError: not a run's workdir, no checkpoint (at ``step``), a bad
      ``batch_size`` or platform, or an output that cannot be written.
  """
  if batch_size is not None and batch_size < 1:
    raise UserError(f'--batch_size={batch_size} must be at least 1 (or left '
                    'out: any batch size)')
  if platforms is not None:
    platforms = tuple(platforms)
    unknown = [p for p in platforms if p not in PLATFORMS]
    if unknown or not platforms:
      raise UserError(f'unknown platform {(unknown or [""])[0]!r}; use one or '
                      f'more of {", ".join(PLATFORMS)}')
  workdir = workdir_lib.resolve(workdir)
  _check_workdir(workdir)
  config = workdir_lib.load_config(workdir)
  with config.unlocked():
    config.conv_impl = 'xla'  # no custom calls: see the module docstring
  exp, state = evaluate.restore_run(config, workdir, step)
  step = int(jax.device_get(state.step))
  shape = exp.specs.model.input_shape
  batch = (batch_size if batch_size is not None
           else jax_export.symbolic_shape('batch')[0])
  images = jax.ShapeDtypeStruct((batch, *shape), jnp.uint8)
  try:
    exported = jax_export.export(jax.jit(inference_fn(exp, state)),
                                 platforms=platforms)(images)
  except ValueError as e:  # e.g. a custom call jax.export refuses
    raise UserError(f'cannot export {workdir}: {first_line(e)}') from None
  path = os.path.abspath(output) if output else default_path(workdir, step)
  data = exported.serialize()
  _write(path, bytes(data))
  ema = exp.specs.loop.ema_decay > 0
  dims = lambda aval: '[' + ', '.join(str(d) for d in aval.shape) + ']'
  result = {
      'path': path, 'metadata_path': f'{path}.json', 'step': step,
      'workdir': workdir,
      'input': f'uint8 {dims(exported.in_avals[0])}',
      'output': f'float32 {dims(exported.out_avals[0])}',
      'platforms': list(exported.platforms), 'ema': ema,
      'eval_flip': exp.specs.loop.eval_flip,
      'class_names': list(exp.info.class_names), 'bytes': len(data),
  }
  try:
    workdir_lib.write_json(result['metadata_path'], result)
  except OSError as e:
    raise UserError(f'cannot write {result["metadata_path"]} ({e.strerror}); '
                    'choose another --output') from None
  return result


def load(path: str) -> jax_export.Exported:
  """The exported program in ``path``; call it with ``.call(images)``.

  Raises:
    UserError: the file does not exist or is not a serialised export.
  """
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise UserError(f'cannot read {path} ({e.strerror})') from None
  try:
    return jax_export.deserialize(bytearray(data))
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f'{path} is not a jax.export file ({first_line(e)})'
                    ) from None


def format_result(result: dict) -> str:
  """One line saying what was written and how to use it."""
  weights = 'EMA weights' if result['ema'] else 'weights'
  return (f"exported step {result['step']} ({weights}, XLA kernels, "
          f"{'/'.join(result['platforms'])}): {result['input']} images -> "
          f"{result['output']} logits, {result['bytes']:,} bytes: "
          f"{result['path']}; load with jax.export.deserialize(open(path, "
          "'rb').read()).call(images)")
