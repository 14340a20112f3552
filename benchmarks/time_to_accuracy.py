"""Eval accuracy against wall time, read from a training run's metrics.jsonl.

The clock is ``eval/wall_time_s``: seconds since the run first started, data
loading, compilation and evaluation included (resumes add up). For each
budget the table gives the last evaluation finished within it. ``--runs``
tabulates every run folder under a directory, one row each (this is how
``results/cpu_time_to_accuracy/table.md`` is made).

  python train.py --config configs/inception_cifar.py:cpu \\
      --config.dataset=folder:/tmp/cifar10 --workdir /tmp/c
  python benchmarks/time_to_accuracy.py --workdir /tmp/c --minutes 10,20,30
  python benchmarks/time_to_accuracy.py --runs results/cpu_time_to_accuracy \\
      --minutes 5,10,15,20
  python benchmarks/time_to_accuracy.py --runs results/nin_cpu \\
      --minutes 15,30,45 --plot results/nin_cpu/curve.png --target 0.85
"""
import argparse
import json
import os
import sys

from inception.sweeps import plots, time_to_accuracy


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  where = parser.add_mutually_exclusive_group(required=True)
  where.add_argument('--workdir', help='one training run')
  where.add_argument('--runs', help='a folder of training runs: one row each')
  parser.add_argument('--minutes', default='10,20,30')
  parser.add_argument('--json', action='store_true')
  parser.add_argument('--plot', help='with --runs: also draw every run\'s '
                      'accuracy against wall time into this PNG')
  parser.add_argument('--target', type=float,
                      help='with --plot: an accuracy to mark on the figure')
  args = parser.parse_args()
  minutes = [float(m) for m in args.minutes.split(',')]
  if args.plot and not args.runs:
    sys.exit('error: --plot draws a folder of runs: pass --runs')
  if args.runs:
    if not os.path.isdir(args.runs):
      sys.exit(f'error: {args.runs} is not a folder of training runs')
    print(time_to_accuracy.runs_table(args.runs, minutes), end='')
    if args.plot:
      plots.plot_run_curves(time_to_accuracy.run_curves(args.runs), args.plot,
                            target=args.target)
    return
  points = time_to_accuracy.eval_curve(args.workdir)
  if not points:
    sys.exit(f'error: {args.workdir} has no eval/wall_time_s records; train '
             'it first')
  rows = time_to_accuracy.at_budgets(points, minutes)
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
