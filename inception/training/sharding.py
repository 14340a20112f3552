"""Device mesh, shardings and multi-host set-up (jax.jit + NamedSharding, no pmap)."""
import ipaddress
import os
import re
import warnings

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from inception.errors import UserError

DATA_AXIS = 'data'


# A host name or IPv4 address: dot-separated labels of letters, digits, - and _.
_HOST = re.compile(r'[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?'
                   r'(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*')


def detected_cluster() -> str:
  """The cluster job ``jax.distributed.initialize()`` would read, or ''.

  The environments JAX auto-detects (SLURM, Open MPI, Cloud TPU, Kubernetes),
  asked the way JAX asks them; opt-in ones (mpi4py) are left out, as JAX
  leaves them out.
  """
  try:
    from jax._src import clusters  # pylint: disable=g-import-not-at-top
    kinds = clusters.ClusterEnv._cluster_types  # pylint: disable=protected-access
  except (ImportError, AttributeError):  # another JAX: SLURM's own variables
    return 'SlurmCluster' if 'SLURM_JOB_ID' in os.environ else ''
  for kind in kinds:
    try:
      with warnings.catch_warnings():  # JAX warns again if it is used
        warnings.simplefilter('ignore')
        if not kind.opt_in_only_method and kind.is_env_present():
          return kind.__name__
    except Exception:  # pylint: disable=broad-except
      continue  # an environment JAX could not read either
  return ''


def _check_address(address: str):
  """``host:port`` (``[v6 address]:port``), port 1-65535, or a UserError."""
  host, sep, port = address.rpartition(':')
  if host.startswith('[') and host.endswith(']'):
    try:
      ok = ipaddress.ip_address(host[1:-1]).version == 6
    except ValueError:
      ok = False
  else:
    ok = bool(_HOST.fullmatch(host))
  if not (sep and ok and port.isdigit() and 1 <= int(port) <= 65535):
    raise UserError(f'--coordinator_address={address!r} must be host:port of '
                    'process 0 (e.g. 10.0.0.1:1234 or [::1]:1234, port '
                    '1-65535)')


def check_distributed(coordinator_address: str = '',
                      num_processes: int | None = None,
                      process_id: int | None = None):
  """Refuses multi-host flags that do not describe one consistent job.

  Called once, before JAX starts or any data is read: a wrong combination
  would otherwise train as one process without a word, or fail later with a
  traceback. A cluster job JAX detects (``detected_cluster``: SLURM, ...)
  may leave out what its environment gives.

  Args:
    coordinator_address: ``--coordinator_address`` ('' when not given).
    num_processes: ``--num_processes``, None when not given; -1 asks JAX to
      detect the cluster's processes.
    process_id: ``--process_id``, None when not given.

  Raises:
    UserError: one line saying which flags disagree and how to fix them.
  """
  if not coordinator_address and num_processes is None and process_id is None:
    return  # one process
  full = ('give all of --coordinator_address=host:port (of process 0), '
          '--num_processes and --process_id, or run it as a cluster job that '
          'JAX detects (SLURM, Open MPI, Cloud TPU, Kubernetes)')
  if coordinator_address:
    _check_address(coordinator_address)
  if num_processes is not None and num_processes < 1 and num_processes != -1:
    raise UserError(f'--num_processes={num_processes} must be at least 1 (or '
                    '-1: take the processes of the cluster job)')
  if process_id is not None:
    if num_processes is None:
      raise UserError(f'--process_id={process_id} needs --num_processes (-1: '
                      'the cluster job\'s)')
    if process_id < 0:
      raise UserError(f'--process_id={process_id} must be at least 0')
    if process_id >= num_processes >= 1:
      raise UserError(f'--process_id={process_id} must be between 0 and '
                      f'{num_processes - 1} (--num_processes={num_processes})')
  multi = coordinator_address or num_processes == -1 or (
      num_processes or 0) > 1 or process_id is not None
  if not multi or detected_cluster():
    return  # --num_processes=1 alone, or the cluster gives what is left out
  if num_processes == -1:
    raise UserError('--num_processes=-1 takes the processes of a cluster job, '
                    f'but none was detected; {full}')
  if not coordinator_address and num_processes > 1:
    raise UserError(f'--num_processes={num_processes} without '
                    '--coordinator_address: each process would train alone; '
                    f'{full}')
  if not coordinator_address:
    raise UserError(f'--process_id={process_id} without --coordinator_address '
                    'names a process of no multi-process job; drop it, or '
                    f'{full}')
  if num_processes is None or process_id is None:
    raise UserError(f'--coordinator_address={coordinator_address} starts a '
                    f'multi-process job: {full}')


def initialize_distributed(coordinator_address: str = '', num_processes: int = 0,
                           process_id: int = -1, cpu_collectives: str = 'gloo'):
  """Starts multi-host JAX when asked to; a no-op for a single process.

  The entry point calls ``check_distributed`` first, which refuses
  inconsistent flags.

  Args:
    coordinator_address: ``host:port`` of process 0. The coordinator binds
      only to this address. Empty: single process, unless ``num_processes``
      is -1 or above 1 in a cluster job JAX detects (TPU pods, SLURM), whose
      environment gives the coordinator.
    num_processes: number of processes (0: not given; -1: the cluster's).
    process_id: this process's index (-1: not given, the cluster's).
    cpu_collectives: CPU cross-process collectives ('gloo'); unused on GPU/TPU.
  """
  if not coordinator_address and num_processes != -1 and num_processes <= 1:
    return
  if cpu_collectives:
    jax.config.update('jax_cpu_collectives_implementation', cpu_collectives)
  if num_processes == -1 and not coordinator_address and process_id < 0:
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(coordinator_address or None,
                               num_processes if num_processes > 0 else None,
                               process_id if process_id >= 0 else None,
                               coordinator_bind_address=coordinator_address
                               or None)


def make_mesh() -> Mesh:
  """A 1-D mesh over every device of every process, axis ``data``."""
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the ``data`` axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array (params, optimizer state)."""
  return NamedSharding(mesh, P())


def check_batch_size(batch_size: int, accum_steps: int = 1):
  """The global batch, and each micro-batch of it, must split over all devices.

  Raises:
    UserError: ``batch_size`` (or ``batch_size / accum_steps``) is not a
      positive multiple of the device count of all processes.
  """
  n = jax.device_count()
  if batch_size <= 0 or batch_size % n:
    raise UserError(f'batch_size={batch_size} must be a positive multiple of '
                    f'the device count ({n} devices over '
                    f'{jax.process_count()} processes); set '
                    f'--config.batch_size to a multiple of {n}')
  micro = batch_size // accum_steps
  if accum_steps > 1 and micro % n:
    raise UserError(f'a micro-batch of batch_size / grad_accum_steps = {micro} '
                    f'does not split over {n} devices; '
                    'change --config.grad_accum_steps or --config.batch_size')
