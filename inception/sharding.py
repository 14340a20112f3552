"""Device mesh, shardings and multi-host set-up (jax.jit + NamedSharding, no pmap)."""
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from inception.errors import UserError

DATA_AXIS = 'data'


def initialize_distributed(coordinator_address: str = '', num_processes: int = 0,
                           process_id: int = -1, cpu_collectives: str = 'gloo'):
  """Starts multi-host JAX when asked to; a no-op for a single process.

  Args:
    coordinator_address: ``host:port`` of process 0. The coordinator binds
      only to this address. Empty: single process, unless ``num_processes``
      is -1, which lets JAX detect a cluster (TPU pods, SLURM).
    num_processes: number of processes.
    process_id: this process's index.
    cpu_collectives: CPU cross-process collectives ('gloo'); unused on GPU/TPU.
  """
  if not coordinator_address and num_processes != -1:
    return
  if cpu_collectives:
    jax.config.update('jax_cpu_collectives_implementation', cpu_collectives)
  if num_processes == -1:
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               coordinator_bind_address=coordinator_address)


def make_mesh() -> Mesh:
  """A 1-D mesh over every device of every process, axis ``data``."""
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the ``data`` axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array (params, optimizer state)."""
  return NamedSharding(mesh, P())


def check_batch_size(batch_size: int, name: str = 'batch_size'):
  """The global batch must split evenly over all devices of all processes."""
  n = jax.device_count()
  if batch_size <= 0 or batch_size % n:
    raise UserError(f'{name}={batch_size} must be a positive multiple of the '
                    f'device count ({n} devices over {jax.process_count()} '
                    f'processes); set --config.{name} to a multiple of {n}')


def global_batch(local: dict, sharding: NamedSharding) -> dict:
  """Assembles each process's slice of the batch into global jax.Arrays."""
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in local.items()}
