"""Eval accuracy against wall time, read from training runs' metrics.jsonl.

The clock is ``eval/wall_time_s``: seconds since the run first started, data
loading, compilation and evaluation included (resumes add up). For each
budget, a run's figure is its last evaluation finished within it.
"""
import os

from inception.training import metrics, workdir as workdir_lib


def eval_curve(workdir: str) -> list[dict]:
  """The run's evaluations in order: step, wall-clock seconds, accuracy."""
  return [{'step': r['step'], 'wall_s': r['eval/wall_time_s'],
           'accuracy': r['eval/accuracy']}
          for r in metrics.read_jsonl(workdir_lib.path(workdir,
                                                       workdir_lib.METRICS))
          if 'eval/wall_time_s' in r]


def at_budgets(points: list[dict], minutes: list[float]) -> list[dict]:
  """The last evaluation finished within each budget (None if none was)."""
  rows = []
  for m in minutes:
    done = [p for p in points if p['wall_s'] <= 60 * m]
    rows.append({'minutes': m, **(done[-1] if done else
                                  {'step': None, 'wall_s': None,
                                   'accuracy': None})})
  return rows


def _cell(point: dict | None) -> str:
  if point is None or point['step'] is None:
    return 'none yet'
  return f"{point['accuracy']:.4f} ({point['wall_s'] / 60:.1f} min)"


def run_curves(root: str) -> dict[str, list[dict]]:
  """Every run folder under ``root`` (with metrics) -> its ``eval_curve``."""
  return {name: eval_curve(os.path.join(root, name))
          for name in sorted(os.listdir(root))
          if os.path.isfile(workdir_lib.path(os.path.join(root, name),
                                             workdir_lib.METRICS))}


def runs_table(root: str, minutes: list[float]) -> str:
  """Markdown: one row per run folder under ``root`` (sorted by name).

  Columns: the last evaluation within each budget, the best one within the
  largest budget, and the run's final evaluation, each with its minute.
  """
  head = (['run'] + [f'{m:g} min' for m in minutes] +
          [f'best within {max(minutes):g} min', 'end of the run'])
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for name, points in run_curves(root).items():
    cells = [_cell(r) for r in at_budgets(points, minutes)]
    within = [p for p in points if p['wall_s'] <= 60 * max(minutes)]
    best = max(within, key=lambda p: p['accuracy']) if within else None
    cells += [_cell(best), _cell(points[-1] if points else None)]
    lines.append('| ' + ' | '.join([name, *cells]) + ' |')
  return '\n'.join(lines) + '\n'
