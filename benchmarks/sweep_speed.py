"""Training images/s of a sweep's arms, side by side on this machine.

The runs of a long sweep log their own images/s, but they ran over days, on
different VMs and beside other work, so those rates are not comparable. This
times every step shape the sweep's finished runs trained (model, batch,
dtypes) in one process: each shape's train step is compiled, then timed
``--steps`` steps at a time, shape after shape, ``--rounds`` times over, so a
change in the machine's load touches every arm alike. It writes
``speed.json`` into the sweep folder (the median of each arm's rounds, with
the machine and commit), which the report's frontier then plots against.
Run it on a quiet machine.

  python benchmarks/sweep_speed.py results/cifar10_frontier --steps 10 --rounds 5
  python report.py results/cifar10_frontier
"""
import argparse
import datetime
import json
import os
import sys

from inception import provenance
from inception.errors import UserError
from inception.sweeps import cost


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('workdir', help='a sweep folder with finished runs')
  parser.add_argument('--steps', type=int, default=10,
                      help='train steps per timing')
  parser.add_argument('--rounds', type=int, default=5,
                      help='timings per arm, taken round-robin')
  parser.add_argument('--out', help=f'where to write (default: WORKDIR/'
                      f'{cost.SPEED_FILE})')
  args = parser.parse_args()
  if args.steps < 1 or args.rounds < 1:
    sys.exit('error: --steps and --rounds must be at least 1')
  if not os.path.isdir(args.workdir):
    sys.exit(f'error: {args.workdir} is not a sweep folder')
  try:
    speed = cost.measure_speed(args.workdir, args.steps, args.rounds)
  except UserError as e:
    sys.exit(f'error: {e}')
  p = provenance.provenance()
  speed = {'cpu': p['cpu'], 'device_kind': p['device_kind'],
           'backend': p['backend'], 'git_commit': p['git_commit'],
           'jax_version': p['jax_version'],
           'date': datetime.date.today().isoformat(),
           'command': ' '.join([os.path.basename(sys.executable),
                                *sys.argv]), **speed}
  out = args.out or os.path.join(args.workdir, cost.SPEED_FILE)
  with open(out, 'w', encoding='utf-8') as f:
    json.dump(speed, f, indent=2)
    f.write('\n')
  for arm in speed['arms']:
    print(f"{arm['images_per_s']:8.1f} img/s  {arm['run']}")
  print(f'wrote {out} ({speed["cpu"]})')


if __name__ == '__main__':
  main()
