"""A run's identity: the config saved in its workdir, checked on every resume.

A workdir's ``config.json`` says what its checkpoints and metrics are. A
resume (or a re-run of a finished run) may change only fields that do not
change the result: how often to log, evaluate and save, and how many
checkpoints to keep. Any other difference (model, data, splits, batch,
schedule, optimizer, seed, dtype, ...) is refused in one line naming each
field with its saved and requested values (``specs.saved_config`` writes
the identity).
"""
import os

from inception.training import workdir as workdir_lib
from inception.errors import UserError

# Fields a resume may change: cadence and retention, never the result.
MUTABLE = ('log_every_steps', 'eval_every_epochs', 'checkpoint_every_steps',
           'keep_checkpoints', 'stuck_windows', 'stop_when_stuck')


def flatten(d: dict, prefix: str = '') -> dict:
  """Nested dicts as one dict keyed by dotted paths ('model.width')."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def differences(saved: dict, requested: dict) -> dict[str, tuple]:
  """field -> (saved value, requested value) for every field that differs.

  Only fields present on both sides count: a field the code lost after the
  run was saved is no longer part of its identity (``check_resume`` refuses
  a saved config that lacks a field).
  """
  a, b = flatten(saved), flatten(requested)
  return {k: (a[k], b[k]) for k in sorted(set(a) & set(b)) if a[k] != b[k]}


def check_resume(requested: dict, workdir: str, has_checkpoint: bool) -> dict:
  """Refuses a resume that would change the run; returns the allowed changes.

  Args:
    requested: the requested config as it would be saved (``Specs.identity``,
      ``specs.saved_config``).
    workdir: the run's workdir.
    has_checkpoint: whether the workdir holds a checkpoint (a run with none,
      and no summary, has trained nothing yet and may start over freely).

  Returns:
    field -> (saved, requested) for the changed fields in ``MUTABLE``.

  Raises:
    UserError: a field outside ``MUTABLE`` differs from the saved config.
  """
  path = workdir_lib.path(workdir, workdir_lib.CONFIG)
  has_summary = os.path.exists(workdir_lib.path(workdir, workdir_lib.SUMMARY))
  if not (has_checkpoint or has_summary):
    return {}
  if not os.path.exists(path):
    raise UserError(
        f'{workdir} holds a trained run but no {workdir_lib.CONFIG}, so '
        'whether this command would change its result cannot be checked: '
        f'restore {workdir_lib.CONFIG} or use a new --workdir')
  saved = workdir_lib.read_config(path)
  diff = differences(saved, requested)
  refused = {k: v for k, v in diff.items() if k not in MUTABLE}
  if refused:
    fields = '; '.join(f'{k}: saved {a!r}, requested {b!r}'
                       for k, (a, b) in refused.items())
    raise UserError(
        f'{workdir} is a run of another config ({fields}); these fields '
        'change the result, so a resume may not change them: use a new '
        '--workdir (with --config.init_from='
        f'{workdir} to start from its weights)')
  # A field the code gained since is filled in by read_config; any other
  # field the saved config lacks was deleted, and its value is unknown.
  missing = sorted(set(flatten(requested)) - set(flatten(saved)))
  if missing:
    raise UserError(
        f'{path} lacks {", ".join(missing)}, so whether this command would '
        'change the run cannot be checked: restore the file or use a new '
        '--workdir')
  return {k: v for k, v in diff.items() if k in MUTABLE}
