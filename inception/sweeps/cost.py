"""What a sweep will cost, before it runs: steps, training FLOPs, hours.

Each run's remaining images come from its config (epochs or steps, batch,
and the train split's size, counted without decoding an image); its
training FLOPs are 6 x MACs per image x images (forward and backward, as the
report counts them). Hours need a measured images/s: from a run of the same
shapes that this sweep (or another named directory) has already trained, or
timed here over a few steps on random images (``--time_steps``). A run with
neither says so instead of guessing from FLOPs, which CPU throughput at
these widths does not follow.
"""
import dataclasses
import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from inception import data, models
from inception.data import sources
from inception.models import budget
from inception.training import build, specs, steps
from inception.training import workdir as workdir_lib
from inception.errors import UserError

# Fields that set a step's shapes and kernels, hence its images/s.
_SPEED_FIELDS = ('model', 'batch_size', 'dtype', 'conv_impl',
                 'activation_dtype', 'image_size', 'channels',
                 'grad_accum_steps', 'randaugment_num_ops', 'mixup_alpha',
                 'cutmix_alpha', 'ema_decay')


@dataclasses.dataclass(frozen=True)
class RunCost:
  """One run's remaining work and, where measured, its time."""
  name: str
  steps: int | None  # still to train; None: the split's size is unknown here
  images: int | None
  train_flops: float | None
  images_per_s: float | None
  rate_from: str  # where images_per_s was measured; '' when it was not

  @property
  def seconds(self) -> float | None:
    return self.images / self.images_per_s if self.images_per_s else None


def with_overrides(config: ml_collections.ConfigDict,
                   overrides: dict) -> ml_collections.ConfigDict:
  """A resolved copy of ``config`` with a run's dotted ``overrides`` set."""
  cfg = config.copy_and_resolve_references()
  with cfg.unlocked():
    for key, value in overrides.items():
      node = cfg
      *parents, leaf = key.split('.')
      for p in parents:
        node = node[p]
      node[leaf] = value
  return cfg


def speed_key(cfg) -> str:
  """What sets a run's images/s: its model, batch, dtypes and kernels.

  ``cfg``: a config (dict or ConfigDict), saved by any version (fields added
  since are filled in), so a run's saved config and today's agree.
  """
  cfg = workdir_lib.with_added_fields(cfg)
  return json.dumps({k: cfg.get(k) for k in _SPEED_FIELDS}, sort_keys=True,
                    default=str)


def _trained_step(run_dir: str) -> int:
  """The last step a run's metrics.jsonl records (0 when none)."""
  last = 0
  try:
    with open(workdir_lib.path(run_dir, workdir_lib.METRICS),
              encoding='utf-8') as f:
      for line in f:
        try:
          last = max(last, int(json.loads(line).get('step', 0)))
        except (ValueError, TypeError, AttributeError):
          continue
  except OSError:
    pass
  return last


def _measured_rate(run_dir: str) -> float | None:
  """A run's images/s: its summary's, else the mean of its last log windows."""
  try:
    summary = workdir_lib.read_json(workdir_lib.path(run_dir,
                                                     workdir_lib.SUMMARY))
    if isinstance(summary, dict) and summary.get('images_per_s'):
      return float(summary['images_per_s'])
  except UserError:
    pass
  rates = []
  try:
    with open(workdir_lib.path(run_dir, workdir_lib.METRICS),
              encoding='utf-8') as f:
      for line in f:
        try:
          rate = json.loads(line).get('train/images_per_s')
        except (ValueError, AttributeError):
          continue
        if isinstance(rate, (int, float)) and rate > 0:
          rates.append(float(rate))
  except OSError:
    return None
  # The first window includes compilation; skip it when there are more.
  rates = rates[1:] if len(rates) > 1 else rates
  return float(np.mean(rates[-5:])) if rates else None


def _run_configs(root: str):
  """(name, run folder, saved config) of each run under ``root``, by name;
  folders without a readable config are skipped."""
  if not os.path.isdir(root):
    return
  for name in sorted(os.listdir(root)):
    run_dir = os.path.join(root, name)
    try:
      cfg = workdir_lib.read_config(workdir_lib.path(run_dir,
                                                     workdir_lib.CONFIG))
    except (UserError, OSError):
      continue
    yield name, run_dir, cfg


def measured_rates(dirs: list[str]) -> dict[str, tuple[float, str]]:
  """speed key -> (images/s, which run) over the runs found in ``dirs``."""
  found = {}
  for root in dirs:
    for name, run_dir, cfg in _run_configs(root):
      rate = _measured_rate(run_dir)
      if rate:
        found.setdefault(speed_key(cfg), (rate, f'measured by {name}'))
  return found


def step_timer(cfg: ml_collections.ConfigDict):
  """A timer of ``cfg``'s train step on random images, on one device.

  Builds and compiles the step (one untimed step); the returned
  ``timer(num_steps) -> images/s`` then runs that many steps. The data
  pipeline is left out: this is the step's own speed.
  """
  s = specs.read(cfg)
  model = build.model(s.model)
  tx = build.optimizer(s.optimizer, build.learning_rate_fn(s.optimizer, 100))
  c = s.model.channels
  step = jax.jit(steps.make_train_step(
      model, mean=(0.0,) * c, std=(1.0,) * c,
      num_classes=s.model.num_classes, accum_steps=s.loop.grad_accum_steps,
      ema_decay=s.loop.ema_decay, augment=s.loop.augment), donate_argnums=0)
  key = jax.random.key(0)
  # Created under jit, as training does: fresh buffers, none shared between
  # leaves, which donating the state would refuse.
  state = jax.jit(functools.partial(
      steps.create_train_state, model, tx, ema=s.loop.ema_decay > 0))(
          models.init_variables(model, s.model.input_shape, key))
  rng = np.random.default_rng(0)
  batch = {'image': jnp.asarray(rng.integers(
      0, 256, (s.data.batch_size, *s.model.input_shape), np.uint8)),
           'label': jnp.asarray(rng.integers(0, s.model.num_classes,
                                             s.data.batch_size), jnp.int32)}

  def timer(num_steps: int) -> float:
    nonlocal state
    start = time.perf_counter()
    for _ in range(num_steps):
      state, metrics = step(state, batch, key)
    jax.block_until_ready(metrics)
    return num_steps * s.data.batch_size / (time.perf_counter() - start)

  timer(1)  # compiles
  return timer


def time_train_steps(cfg: ml_collections.ConfigDict, num_steps: int) -> float:
  """Images/s of ``num_steps`` train steps of ``cfg`` (``step_timer``)."""
  return step_timer(cfg)(num_steps)


def side_by_side(configs: list[ml_collections.ConfigDict], num_steps: int,
                 rounds: int) -> list[list[float]]:
  """Images/s of each config's step, ``rounds`` times, round-robin.

  Every step is compiled first; then each round times ``num_steps`` steps
  of every config in turn, so that a change in the machine's load touches
  all of them alike. Returns one list of ``rounds`` rates per config.
  """
  timers = [step_timer(cfg) for cfg in configs]
  rates = [[] for _ in configs]
  for _ in range(rounds):
    for timer, out in zip(timers, rates):
      out.append(timer(num_steps))
  return rates


# The side-by-side images/s of a sweep's arms (benchmarks/sweep_speed.py).
SPEED_FILE = 'speed.json'


def finished_shapes(workdir: str) -> list[tuple[str, str, dict]]:
  """(speed key, first run's name, its config) per distinct step shape.

  Over the finished runs of sweep ``workdir`` (a ``summary.json`` whose
  status is done), in name order; runs that differ only in what does not
  change a step's speed (seed, lr, schedule) share one entry.
  """
  found = {}
  for name, run_dir, cfg in _run_configs(workdir):
    try:
      summary = workdir_lib.read_json(workdir_lib.path(run_dir,
                                                       workdir_lib.SUMMARY))
    except (UserError, OSError):
      continue
    if isinstance(summary, dict) and summary.get('status') == 'done':
      found.setdefault(speed_key(cfg), (name, cfg))
  return [(key, name, cfg) for key, (name, cfg) in found.items()]


def measure_speed(workdir: str, num_steps: int, rounds: int,
                  echo=print) -> dict:
  """Side-by-side images/s of every step shape a sweep's runs trained.

  Compiles each shape's train step, then times ``num_steps`` steps of each
  in turn, ``rounds`` times (``side_by_side``); an arm's rate is the median
  of its rounds. Returns ``SPEED_FILE``'s content (without provenance).

  Raises:
    UserError: the sweep has no finished run.
  """
  shapes = finished_shapes(workdir)
  if not shapes:
    raise UserError(f'{workdir} has no finished run to time; train its '
                    'sweep first')
  echo(f'compiling {len(shapes)} step shape(s), then {rounds} round(s) of '
       f'{num_steps} steps each')
  rates = side_by_side([ml_collections.ConfigDict(cfg) for _, _, cfg in shapes],
                       num_steps, rounds)
  return {'num_steps': num_steps, 'rounds': rounds, 'arms': [
      {'key': key, 'run': name, 'images_per_s': float(np.median(r)),
       'rounds_images_per_s': [round(x, 2) for x in r]}
      for (key, name, _), r in zip(shapes, rates)]}


def read_speed(workdir: str) -> dict | None:
  """``SPEED_FILE`` of a sweep: its machine, date, commit, how it was timed
  (``timing``) and ``rates``, {speed key: images/s}.

  Returns None when the sweep has none; raises UserError when it is not
  what ``benchmarks/sweep_speed.py`` writes.
  """
  path = os.path.join(workdir, SPEED_FILE)
  if not os.path.exists(path):
    return None
  speed = workdir_lib.read_json(path)
  try:
    rates = {a['key']: float(a['images_per_s']) for a in speed['arms']}
    return {'cpu': str(speed['cpu']), 'rates': rates,
            'date': str(speed.get('date', '')),
            'git_commit': str(speed.get('git_commit', ''))[:7],
            'timing': f"median of {int(speed['rounds'])} rounds of "
                      f"{int(speed['num_steps'])} steps"}
  except (TypeError, KeyError, ValueError):
    raise UserError(f'{path} is not a side-by-side speed file (arms with a '
                    'key and images_per_s); rerun benchmarks/sweep_speed.py '
                    'or remove it') from None


def estimate(config: ml_collections.ConfigDict, runs, rate_dirs: list[str],
             time_steps: int = 0, echo=print) -> list[RunCost]:
  """The remaining cost of every run of ``runs`` (``sweep.Run``) not done.

  Args:
    config: the sweep's base config (shared overrides applied).
    rate_dirs: sweep directories whose runs' measured images/s are reused.
    time_steps: > 0: time that many steps here for shapes not measured.
    echo: where a line per timed shape goes.

  A run whose train split cannot be counted here (a dataset only the
  cluster has) is listed with ``steps`` None, unpriced.

  Raises:
    UserError: a run's config is invalid (as training would say).
  """
  rates = measured_rates(rate_dirs)
  costs, sizes = [], {}
  for run in runs:
    if run.done():
      continue
    cfg = with_overrides(config, run.overrides)
    s = specs.read(cfg)
    split = (s.data.source, s.data.train_split)
    if split not in sizes:
      sizes[split] = sources.example_count(s.data, s.data.train_split)
    n = sizes[split]
    if not n:
      costs.append(RunCost(run.name, None, None, None, None, ''))
      continue
    total = build.total_steps(s.optimizer, data.steps_per_epoch(s.data, n))
    remaining = max(0, total - _trained_step(run.workdir))
    if not remaining:
      continue
    images = remaining * s.data.batch_size
    macs = budget.macs(s.model.name, s.model.input_shape, **s.model.kwargs)
    key = speed_key(cfg)
    if key not in rates and time_steps > 0:
      echo(f'# timing {time_steps} train steps of {run.name} ...')
      rates[key] = (time_train_steps(cfg, time_steps), 'timed here')
    rate, where = rates.get(key, (None, ''))
    costs.append(RunCost(run.name, remaining, images, 6.0 * macs * images,
                         rate, where))
  return costs


def _hours(seconds: float) -> str:
  return f'{seconds / 3600:.2f} h'


def format_costs(costs: list[RunCost]) -> list[str]:
  """One line per run to go, then the sweep's total."""
  lines = []
  unsized = [c for c in costs if c.steps is None]
  costs = [c for c in costs if c.steps is not None]
  for c in costs:
    time_part = (f'{c.images_per_s:.0f} img/s ({c.rate_from}) -> '
                 f'{_hours(c.seconds)}' if c.images_per_s
                 else 'images/s not measured')
    lines.append(f'cost {c.name}: {c.steps} steps, {c.images:,} images, '
                 f'{c.train_flops:.3g} training FLOPs, {time_part}')
  timed = [c.seconds for c in costs if c.seconds is not None]
  missing = len(costs) - len(timed)
  total = (f'{len(costs)} run(s) to go: '
           f'{sum(c.train_flops for c in costs):.3g} training FLOPs')
  if timed:
    total += (f', {_hours(sum(timed))} one run at a time at the measured '
              'rates')
  if missing:
    total += (f'; {missing} run(s) not measured (pass --time_steps=N to time '
              'N steps of each shape here)')
  if unsized:
    total += (f'; {len(unsized)} run(s) not priced (their train split cannot '
              'be counted here)')
  lines.append(total)
  return lines
