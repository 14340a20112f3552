"""The sweep command: ``python sweep.py`` (or ``python -m inception.cli.sweep``).

  python sweep.py --config configs/inception_cifar.py \
      --sweep configs/sweeps/bottleneck_ablation.py --workdir runs/ablation \
      [--parallel 2] [--dry_run] [--config.num_epochs=5 ...] \
      [--launcher=slurm --launcher_args=partition=gpu,time=240,gpus_per_node=1]
      [--launcher=ray --ray_address=HOST:6379 --launcher_args=num_gpus=1]

Each run trains in WORKDIR/<run name>/ in its own process. Running the same
command again skips finished runs and resumes interrupted ones; a rerun whose
runs would resolve to another config is refused. --config.* overrides apply
to every run, read as absl reads them (--config.field=value, --config.field
value, --config.flag / --noconfig.flag for booleans). Plans the runs
(``inception.sweeps.sweep``), launches them (here or through ``inception.sweeps.launchers``),
then writes the report (``inception.sweeps.report``).

Exit status: 0 when every run is done; 1 when a run failed (the others
finished, the report is written); 2 for a user error (one ``error:`` line);
130 after Ctrl-C. The first Ctrl-C stops the sweep cleanly: each running run
saves a checkpoint and is recorded 'stopped', the report of what finished is
written, and the same command continues the sweep. A second Ctrl-C aborts
at once (the runs keep their last checkpoints; no report).
"""
from inception import interrupt

if __name__ == '__main__':  # Ctrl-C while importing is one line
  interrupt.install()

# pylint: disable=g-import-not-at-top,wrong-import-position
import os
import shlex
import sys

from absl import flags
from ml_collections import config_flags

from inception.cli import app
from inception.sweeps import launchers, report, sweep, cost as sweep_cost
from inception.training import workdir as workdir_lib
from inception.errors import UserError

config_flags.DEFINE_config_file('config', None, 'Base experiment config.',
                                lock_config=True)
flags.DEFINE_string('sweep', None, 'Sweep file defining get_sweep(config).')
flags.DEFINE_string('workdir', None, 'Directory holding one dir per run.')
flags.DEFINE_integer('parallel', 1, 'Runs trained at the same time.')
flags.DEFINE_bool('dry_run', False, 'Print each arm, each run\'s cost, one '
                  'shell command per run (and, with --launcher=slurm, the '
                  'sbatch script); run none.')
flags.DEFINE_list('cost_from', [], 'Dry run: other sweep directories whose '
                  'runs\' measured images/s price this sweep\'s runs of the '
                  'same shapes (its own runs always do).')
flags.DEFINE_integer('time_steps', 0, 'Dry run: time this many train steps '
                     'of each shape no run has measured (0: do not time).')
flags.DEFINE_enum('launcher', 'local', ['local', 'slurm', 'ray'],
                  'Where runs train: local processes, SLURM via submitit, '
                  'or Ray.')
flags.DEFINE_list('launcher_args', [], 'key=value resources, e.g. slurm: '
                  'partition=gpu,time=240,gpus_per_node=1,cpus_per_task=8,'
                  'nodes=1,account=x; ray: num_cpus=4,num_gpus=1.')
flags.DEFINE_string('ray_address', '', 'Ray cluster address ("" starts a '
                    'local Ray instance).')
flags.DEFINE_string('submitit_cluster', None, "submitit's cluster: unset = "
                    "SLURM where sbatch exists, 'local' = processes here.")
FLAGS = flags.FLAGS


def absolute_config_arg(config_arg: str) -> str:
  """``configs/x.py:args`` with an absolute path, so commands run from anywhere."""
  path, sep, args = config_arg.partition(':')
  return os.path.abspath(path) + sep + args


def shared_overrides(argv: list[str], flag_values) -> list[str]:
  """The ``--config.*`` overrides in ``argv``, each as ``--config.field=value``.

  Read exactly as absl reads them, so that every run resolves the config
  this process did: ``--config.k=v``; ``--config.k v`` (the next argument is
  the value, whatever it looks like); ``--config.k`` and ``--noconfig.k`` for
  booleans; one dash or two; nothing after ``--``. The values of other flags
  are skipped, not mistaken for overrides. Repeats are kept in order (a
  tuple field's flag accumulates them).

  Args:
    argv: the command line, program name first.
    flag_values: the parsed flags (``flags.FLAGS``): which names are flags,
      and which of them are booleans.
  """
  read_files = getattr(flag_values, 'read_flags_from_files', None)
  args = read_files(argv[1:], force_gnu=False) if read_files else argv[1:]
  out, it = [], iter(args)
  for arg in it:
    if arg == '--':
      break
    if not arg.startswith('-') or not arg.strip('-'):
      continue  # a positional argument
    name, eq, value = arg[2 if arg.startswith('--') else 1:].partition('=')
    if name == 'undefok':
      if not eq:
        next(it, None)
      continue
    if name in flag_values:
      flag = flag_values[name]
      if not eq:
        value = 'true' if flag.boolean else next(it, None)
    elif (name.startswith('no') and name[2:] in flag_values
          and flag_values[name[2:]].boolean):
      name, value = name[2:], 'false'
    else:
      continue  # unknown: absl refused it, or --undefok allowed it
    if value is None:
      break  # absl refused the missing value already
    if name.startswith('config.'):
      out.append(f'--{name}={value}')
  return out


def dry_run_commands(runs: list[sweep.Run], config_arg: str,
                     extra: list[str]) -> list[str]:
  """One plain shell command per run, for a cluster scheduler."""
  return [shlex.join(r.command(config_arg, extra)) for r in runs]


# Rounds of a sweep whose file plans more runs from finished ones (an lr
# grid grows at most twice past each end: 5 rounds).
MAX_ROUNDS = 8


def _new_runs(workdir: str, sweep_path: str, config,
              results: dict[str, str]) -> list[sweep.Run]:
  """The runs the sweep file plans now that were not in the rounds so far."""
  return [r for r in sweep.plan(workdir, sweep.load_sweep(sweep_path, config))
          if r.name not in results]


def run_sweep(config, config_arg: str, sweep_path: str, workdir: str,
              extra: list[str], parallel: int = 1, dry_run: bool = False,
              echo=print, launcher: str = 'local',
              launcher_args: list[str] | None = None, ray_address: str = '',
              submitit_cluster: str | None = None,
              interrupt: sweep.Interrupt | None = None,
              cost_from: list[str] | None = None, time_steps: int = 0
              ) -> dict[str, str] | None:
  """Plans and runs a sweep (``main`` then writes the report).

  A sweep file may plan from finished runs (an lr grid that grows past a
  winning edge, ``inception.sweeps.frontier``): once a round has finished,
  the file is read again and the runs it newly plans run as the next round,
  until it plans none (at most ``MAX_ROUNDS``; a dry run shows the first).

  Args:
    workdir: the sweep's directory (``~`` expanded, made absolute here).
    launcher: 'local', 'slurm' or 'ray' (``inception.sweeps.launchers``).
    launcher_args: ``key=value`` resources for the launcher, e.g.
      ``partition=gpu``, ``time=240`` (minutes), ``gpus_per_node=1``.
    ray_address: Ray cluster to join ('' starts a local instance).
    submitit_cluster: submitit's ``cluster`` (None: SLURM where ``sbatch``
      exists; 'local': processes on this machine, as the tests use).
    interrupt: the local launcher's Ctrl-C handling (``sweep.Interrupt``);
      its ``requested`` says afterwards whether the sweep was stopped.
    cost_from: dry run: sweep directories whose measured images/s price
      runs of the same shapes (``inception.sweeps.cost``).
    time_steps: dry run: time this many steps of each unmeasured shape.

  Returns:
    run name -> final status, or None for a dry run (which prints each arm,
    each run's remaining cost and the total, one shell command per run and,
    for SLURM, the sbatch script, and writes nothing).
  """
  if parallel < 1:
    raise UserError(f'--parallel must be at least 1, got {parallel}')
  args = launchers.parse_args(launcher, launcher_args or [])
  workdir = workdir_lib.resolve(workdir)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f'--workdir {workdir} is a file; give a directory')
  config_arg = absolute_config_arg(config_arg)
  # In a dry run too, and before anything runs: a rerun of another config,
  # against the manifest (before the sweep file's work), then every run.
  sweep.check_rerun(workdir, config_arg, extra, [], config)
  runs = sweep.plan(workdir, sweep.load_sweep(sweep_path, config))
  sweep.check_rerun(workdir, config_arg, extra, runs, config)
  jobs_dir = os.path.join(workdir, '.submitit')
  if time_steps < 0:
    raise UserError(f'--time_steps must be 0 or more, got {time_steps}')
  if dry_run:
    for line in sweep.describe_arms(config, runs):
      echo(f'# {line}')
    costs = sweep_cost.estimate(config, runs, [workdir, *(cost_from or [])],
                                time_steps, echo)
    for line in sweep_cost.format_costs(costs):
      echo(f'# {line}')
    for line in dry_run_commands(runs, config_arg, extra):
      echo(line)
    if launcher == 'slurm':
      echo(f'# the sbatch script submitit would submit (one array task per '
           f'run):\n{launchers.sbatch_script(jobs_dir, args, len(runs))}')
    return None
  if launcher == 'ray' and not ray_address:
    launchers.check_local_ray_fits(args)  # before anything is written
  workdir_lib.prepare(workdir)  # writable, or one error line
  results, interrupt = {}, interrupt or sweep.Interrupt()
  for _ in range(MAX_ROUNDS):
    sweep.write_manifest(workdir, config_arg, sweep_path, extra, runs, config)
    if launcher == 'slurm':
      done = launchers.run_slurm(runs, config_arg, extra, args, jobs_dir,
                                 echo, cluster=submitit_cluster)
    elif launcher == 'ray':
      done = launchers.run_ray(runs, config_arg, extra, args, ray_address,
                               echo)
    else:
      done = sweep.execute(runs, config_arg, extra, parallel, echo,
                           interrupt, program=sweep.program_key(config))
    results.update(done)
    if interrupt.requested or 'failed' in done.values():
      break
    runs = _new_runs(workdir, sweep_path, config, results)
    if not runs:
      break
    sweep.check_rerun(workdir, config_arg, extra, runs, config)
    echo(f'the sweep file plans {len(runs)} more run(s) from the finished '
         'ones (e.g. an lr grid that grew past a winning edge)')
  failed = [n for n, s in results.items() if s == 'failed']
  if failed:
    echo(f'{len(failed)} run(s) failed: {", ".join(failed)} (see their '
         f'{workdir_lib.RUN_STATUS} and {workdir_lib.LOG})')
  return results


def main(argv):
  del argv
  extra = shared_overrides(sys.argv, FLAGS)
  config_arg = config_flags.get_config_filename(FLAGS['config'])
  workdir = workdir_lib.resolve(FLAGS.workdir)
  interrupt = sweep.Interrupt()
  try:
    results = run_sweep(FLAGS.config, config_arg, FLAGS.sweep, workdir,
                        extra, FLAGS.parallel, FLAGS.dry_run,
                        launcher=FLAGS.launcher,
                        launcher_args=FLAGS.launcher_args,
                        ray_address=FLAGS.ray_address,
                        submitit_cluster=FLAGS.submitit_cluster,
                        interrupt=interrupt, cost_from=FLAGS.cost_from,
                        time_steps=FLAGS.time_steps)
    if results is None:  # dry run
      return
    print(report.format_summary(report.write_report(workdir)))
  except report.ReportNotWritten as e:
    print(e.table)
    raise
  except OSError as e:
    raise UserError(f'{e.filename or workdir}: {e.strerror or e}; check the '
                    'permissions and free space of --workdir') from None
  if interrupt.requested:
    stopped = sorted(n for n, s in results.items() if s == 'stopped')
    print(f'interrupted: {len(stopped)} run(s) stopped with a checkpoint'
          f'{": " + ", ".join(stopped) if stopped else ""}; run the same '
          'command again to continue the sweep', flush=True)
    sys.exit(130)
  if 'failed' in results.values():
    sys.exit(1)  # every other run finished and the report is written


def run():
  """Parses the flags, runs the sweep and reports (the console entry point)."""
  flags.mark_flags_as_required(['config', 'sweep', 'workdir'])
  app.run(main)


if __name__ == '__main__':
  run()
