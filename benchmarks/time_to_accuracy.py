"""Eval accuracy against wall time, read from a training run's metrics.jsonl.

The clock is ``eval/wall_time_s``: seconds since the run first started, data
loading, compilation and evaluation included (resumes add up). For each
budget the table gives the last evaluation finished within it.

  python train.py --config configs/inception_cifar.py:cpu \\
      --config.dataset=folder:/tmp/cifar10 --workdir /tmp/c
  python benchmarks/time_to_accuracy.py --workdir /tmp/c --minutes 10,20,30
"""
import argparse
import json
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from inception import metrics, workdir as workdir_lib  # pylint: disable=g-import-not-at-top,wrong-import-position


def evals(workdir: str) -> list[dict]:
  """The run's evaluations in order: step, wall-clock seconds, accuracy."""
  return [{'step': r['step'], 'wall_s': r['eval/wall_time_s'],
           'accuracy': r['eval/accuracy']}
          for r in metrics.read_jsonl(os.path.join(workdir,
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


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--minutes', default='10,20,30')
  parser.add_argument('--json', action='store_true')
  args = parser.parse_args()
  points = evals(args.workdir)
  if not points:
    sys.exit(f'error: {args.workdir} has no eval/wall_time_s records; train '
             'it first')
  rows = at_budgets(points, [float(m) for m in args.minutes.split(',')])
  if args.json:
    print(json.dumps({'evals': points, 'budgets': rows}))
    return
  print('| wall-clock budget | last eval within it: step | at minute |'
        ' eval accuracy |\n|---|---|---|---|')
  for r in rows:
    if r['step'] is None:
      print(f"| {r['minutes']:g} min | none yet | | |")
    else:
      print(f"| {r['minutes']:g} min | {r['step']} | {r['wall_s'] / 60:.1f} |"
            f" {r['accuracy']:.4f} |")
  print('\nall evaluations: ' + ', '.join(
      f"{p['wall_s'] / 60:.1f} min {p['accuracy']:.4f}" for p in points))


if __name__ == '__main__':
  main()
