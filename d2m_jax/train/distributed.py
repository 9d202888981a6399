"""Multi-process (multi-host) runs on JAX's own runtime: start-up and cross-process agreement.

One Python process runs per host (or per GPU, SLURM's default); :func:`maybe_initialize` joins
them with :func:`jax.distributed.initialize` *before* anything touches a JAX device, after which
``jax.devices()`` lists every device of every process and the engine's mesh spans them all. The
engine code is otherwise unchanged: the global batch is assembled from per-process slices with
``jax.make_array_from_process_local_data`` (``d2m_jax.data.pipeline.to_global``) and Orbax
writes checkpoints cooperatively.

Where the coordinator address, process count and process id come from (first match wins, field
by field):

1. explicit arguments / ``config.distributed.*`` fields (``--config.distributed.process_id=1``);
2. ``D2M_COORDINATOR_ADDRESS``, ``D2M_NUM_PROCESSES``, ``D2M_PROCESS_ID`` environment variables
   (handy for hand-started processes; ``JAX_COORDINATOR_ADDRESS`` is honoured by JAX itself);
3. JAX's own cluster detection: SLURM (``SLURM_NTASKS``/``SLURM_PROCID``/node list), Open MPI,
   Cloud TPU pods (GCE metadata / GKE ``TPU_WORKER_HOSTNAMES``).

``config.distributed.mode``: ``"off"`` (never initialize), ``"on"`` (always; fails clearly if
nothing can be resolved), ``"auto"`` (default: initialize only when a multi-process launch is
evident: explicit fields, the ``D2M_*`` variables, ``JAX_COORDINATOR_ADDRESS``, a SLURM job step
with more than one task, or a GKE TPU pod's worker list). A GCE TPU pod VM carries no such
variable, so pods use ``mode="on"`` (``--multiprocess``).

Cross-process agreement: every decision that changes control flow (stop, save, evaluate, a
non-finite loss seen by one host, SIGTERM caught by one host) must be taken by all processes
alike, or the next collective hangs. :func:`agree_any` / :func:`agree_all` gather one bool per
process; :func:`broadcast_from_main` makes process 0's value everyone's. Side effects that must
happen once (logging, ``eval.json``, plots) are guarded by :func:`is_main_process` /
:func:`main_process_only`. Everything is a no-op with a single process.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import ml_collections
import numpy as np

from d2m_jax.configs import get

MODES = ("off", "auto", "on")
ENV_PREFIX = "D2M_"


def distributed_config() -> ml_collections.ConfigDict:
  """The ``config.distributed`` fields (default: one process unless a cluster launch is seen)."""
  d = ml_collections.ConfigDict()
  d.mode = "auto"                                             # 'off' | 'auto' | 'on'
  d.coordinator_address = ml_collections.FieldReference(None, field_type=str)   # "host:port"
  d.num_processes = ml_collections.FieldReference(None, field_type=int)
  d.process_id = ml_collections.FieldReference(None, field_type=int)
  # Comma-separated local device ids ("0,1,2,3") this process uses; None: JAX's choice (SLURM on
  # GPUs: one device per task, ``SLURM_LOCALID``; elsewhere all local devices).
  d.local_device_ids = ml_collections.FieldReference(None, field_type=str)
  # Passed to jax.distributed.initialize: None (auto), 'slurm', 'ompi', 'mpi4py', 'gke', 'gce',
  # 'deactivate' ...
  d.cluster_detection_method = ml_collections.FieldReference(None, field_type=str)
  d.initialization_timeout = 300                              # seconds to wait for all processes
  return d


class DistributedError(RuntimeError):
  """A multi-process start-up problem, with what to do about it in the message."""


@dataclasses.dataclass(frozen=True)
class LaunchSpec:
  """What :func:`maybe_initialize` passes to ``jax.distributed.initialize`` (None: JAX decides)."""
  initialize: bool
  reason: str
  coordinator_address: Optional[str] = None
  num_processes: Optional[int] = None
  process_id: Optional[int] = None
  local_device_ids: Optional[tuple] = None
  cluster_detection_method: Optional[str] = None
  initialization_timeout: int = 300

  def kwargs(self) -> dict:
    kw = dict(coordinator_address=self.coordinator_address, num_processes=self.num_processes,
              process_id=self.process_id, cluster_detection_method=self.cluster_detection_method,
              initialization_timeout=self.initialization_timeout)
    if self.local_device_ids is not None:
      kw["local_device_ids"] = list(self.local_device_ids)
    return kw


def _int_or_none(value, what: str) -> Optional[int]:
  if value is None or value == "":
    return None
  try:
    return int(value)
  except (TypeError, ValueError):
    raise DistributedError(f"{what} must be an integer, got {value!r}") from None


def _parse_device_ids(value) -> Optional[tuple]:
  if value is None or value == "":
    return None
  if isinstance(value, int):
    return (value,)
  if isinstance(value, str):
    try:
      return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
      raise DistributedError(
          f"distributed.local_device_ids must be comma-separated integers like '0,1', "
          f"got {value!r}") from None
  return tuple(int(v) for v in value)


def _cluster_evident(env: Mapping[str, str]) -> Optional[str]:
  """Name of an evident multi-process launch in ``env`` (for mode='auto'), else None."""
  if env.get("JAX_COORDINATOR_ADDRESS"):
    return "JAX_COORDINATOR_ADDRESS is set"
  slurm_vars = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
                "SLURM_LOCALID")
  if all(v in env for v in slurm_vars) and _int_or_none(env["SLURM_NTASKS"], "SLURM_NTASKS") > 1:
    return f"SLURM job step with {env['SLURM_NTASKS']} tasks"
  hosts = env.get("TPU_WORKER_HOSTNAMES") or env.get("TPU_PROCESS_ADDRESSES")
  if hosts and "," in hosts:
    return "Cloud TPU pod (TPU_WORKER_HOSTNAMES)"
  if "OMPI_COMM_WORLD_SIZE" in env and _int_or_none(env["OMPI_COMM_WORLD_SIZE"],
                                                      "OMPI_COMM_WORLD_SIZE") > 1:
    return f"Open MPI launch with {env['OMPI_COMM_WORLD_SIZE']} ranks"
  return None


def _fields(cfg: Any, overrides: Mapping[str, Any]) -> dict:
  """``config.distributed``'s fields with the non-None ``overrides`` (command-line flags) on top;
  unknown override names raise TypeError."""
  fields = {k: get(cfg, k) for k in distributed_config().keys()}
  unknown = set(overrides) - set(fields)
  if unknown:
    raise TypeError(f"unknown distributed field(s): {sorted(unknown)}")
  fields.update({k: v for k, v in overrides.items() if v is not None})
  return fields


def _int_field(fields: dict, env: Mapping[str, str], name: str) -> Optional[int]:
  """Integer field ``name``, else the ``D2M_<NAME>`` environment variable, else None."""
  value = _int_or_none(fields[name], "distributed." + name)
  if value is None:
    var = ENV_PREFIX + name.upper()
    value = _int_or_none(env.get(var), var)
  return value


def _endpoints(fields: dict, env: Mapping[str, str]):
  """(coordinator address, process count, process id), each from the fields or the ``D2M_*``
  environment (None where neither gives it), checked for consistency."""
  address = fields["coordinator_address"] or env.get(ENV_PREFIX + "COORDINATOR_ADDRESS") or None
  nproc = _int_field(fields, env, "num_processes")
  pid = _int_field(fields, env, "process_id")
  if address is not None and ":" not in address:
    raise DistributedError(
        f"coordinator address must be 'host:port' (process 0's host and a free port), got "
        f"{address!r}")
  if nproc is not None and nproc < 1:
    raise DistributedError(f"num_processes must be >= 1, got {nproc}")
  if pid is not None and nproc is not None and not 0 <= pid < nproc:
    raise DistributedError(f"process_id must be in [0, {nproc}), got {pid}")
  return address, nproc, pid


def _explicit_launch(spec, mode: str, explicit: Sequence[str], nproc: Optional[int],
                     method: Optional[str], env: Mapping[str, str]) -> LaunchSpec:
  """The launch when some of address / count / id were given explicitly: all three, or a
  cluster (or ``cluster_detection_method``) to supply the rest; one process needs none."""
  if nproc == 1 and mode == "auto":
    return LaunchSpec(False, "num_processes=1")
  if len(explicit) < 3 and method is None and _cluster_evident(env) is None:
    missing = sorted({"coordinator_address", "num_processes", "process_id"} - set(explicit))
    raise DistributedError(
        f"multi-process launch is missing {', '.join(missing)} (given: {', '.join(explicit)}) "
        f"and no cluster environment (SLURM, Open MPI, Cloud TPU) was detected to supply "
        f"it: pass --config.distributed.<field> or set {ENV_PREFIX}<FIELD> for every process")
  return spec(True, "explicit " + ", ".join(explicit))


def _detected_launch(spec, mode: str, devices: Optional[tuple],
                     env: Mapping[str, str]) -> LaunchSpec:
  """The launch when nothing was given explicitly: an evident cluster, ``mode='on'`` (JAX's
  own detection), or none."""
  evident = _cluster_evident(env)
  if evident is not None:
    if (devices is None and evident.startswith("SLURM")
        and len([d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d]) == 1):
      # SLURM bound one GPU to this task (--gpus-per-task=1 / --gpu-bind): it is local device 0,
      # whereas JAX's SLURM default would pick device SLURM_LOCALID among the visible ones.
      return spec(True, evident + ", one bound GPU", local_device_ids=(0,))
    return spec(True, evident)
  if mode == "on":
    # Leave it to JAX's detection (GCE TPU pods are only visible through the metadata server).
    return spec(True, "mode='on' (JAX cluster auto-detection)")
  return LaunchSpec(False, "no multi-process launch detected")


def resolve(cfg: Any = None, env: Optional[Mapping[str, str]] = None, **overrides) -> LaunchSpec:
  """Decides whether and how to initialize. Pure (no JAX call), so it is unit-testable.

  Args:
    cfg: ``config.distributed`` (ConfigDict or dict) or None.
    env: the environment (default ``os.environ``).
    **overrides: the same field names as :func:`distributed_config`; non-None values win over
      ``cfg`` (command-line flags).
  """
  env = os.environ if env is None else env
  fields = _fields(cfg, overrides)
  mode = fields["mode"] or "auto"
  if mode not in MODES:
    raise DistributedError(f"distributed.mode must be one of {MODES}, got {mode!r}")
  timeout = int(fields["initialization_timeout"] or 300)
  if mode == "off":
    return LaunchSpec(False, "distributed.mode='off'")
  address, nproc, pid = _endpoints(fields, env)
  devices = _parse_device_ids(fields["local_device_ids"])
  method = fields["cluster_detection_method"] or None
  spec = functools.partial(LaunchSpec, coordinator_address=address, num_processes=nproc,
                           process_id=pid, local_device_ids=devices,
                           cluster_detection_method=method, initialization_timeout=timeout)
  explicit = [n for n, v in (("coordinator_address", address), ("num_processes", nproc),
                             ("process_id", pid)) if v is not None]
  if explicit:
    return _explicit_launch(spec, mode, explicit, nproc, method, env)
  return _detected_launch(spec, mode, devices, env)


def maybe_initialize(cfg: Any = None, **overrides) -> bool:
  """Initializes ``jax.distributed`` when :func:`resolve` says so. Idempotent.

  Must run before the first JAX computation or device query of the process (first thing in
  ``main``). Returns True when this process is part of a multi-process run.

  Args:
    cfg: a full config (with ``.distributed``), or ``config.distributed`` itself, or None.
    **overrides: field values from flags (win over the config).
  """
  if cfg is not None and get(cfg, "distributed") is not None:
    cfg = get(cfg, "distributed")
  elif cfg is not None and get(cfg, "task") is not None:
    cfg = None          # a full config without a ``distributed`` block: defaults
  if jax.distributed.is_initialized():
    # Second call (a test, a notebook, train + evaluate in one process): check it agrees.
    wanted = overrides.get("num_processes")
    wanted = _int_or_none(get(cfg, "num_processes") if wanted is None else wanted,
                          "distributed.num_processes")
    if wanted is not None and wanted != jax.process_count():
      raise DistributedError(
          f"jax.distributed is already initialized with {jax.process_count()} processes, "
          f"but {wanted} were requested")
    return True
  spec = resolve(cfg, **overrides)
  if not spec.initialize:
    logging.debug("jax.distributed not initialized: %s", spec.reason)
    return False
  try:  # private API (jax 0.10/0.11); jax.distributed.initialize raises anyway, less clearly
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    backends_up = xla_bridge.backends_are_initialized()
  except (ImportError, AttributeError):
    backends_up = False
  if backends_up:
    raise DistributedError(
        f"a multi-process run was requested ({spec.reason}) but JAX has already been used in "
        f"this process; call d2m_jax.train.distributed.maybe_initialize() first thing in main(), "
        f"before any jax.devices()/computation")
  logging.info("Initializing jax.distributed (%s): coordinator=%s num_processes=%s "
               "process_id=%s", spec.reason, spec.coordinator_address or "auto",
               spec.num_processes or "auto", spec.process_id if spec.process_id is not None
               else "auto")
  try:
    jax.distributed.initialize(**spec.kwargs())
  except Exception as e:  # pylint: disable=broad-except
    raise DistributedError(
        f"jax.distributed.initialize failed ({spec.reason}; coordinator="
        f"{spec.coordinator_address or 'auto'}, num_processes={spec.num_processes or 'auto'}, "
        f"process_id={spec.process_id if spec.process_id is not None else 'auto'}): "
        f"{type(e).__name__}: {e}. Check that every process uses the same coordinator host:port "
        f"(reachable from all hosts, port free on process 0's host), the same process count, "
        f"distinct ids 0..N-1, and that all processes start within "
        f"{spec.initialization_timeout} s") from e
  logging.info("jax.distributed ready: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return True


# ----------------------------------------------------------------------------------------------
# Process-0-only side effects and cross-process agreement.

def is_main_process() -> bool:
  return jax.process_index() == 0


def main_process_only(fn: Callable) -> Callable:
  """Decorator: runs ``fn`` on process 0 only (returns None elsewhere). No collective inside!"""
  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    if jax.process_index() == 0:
      return fn(*args, **kwargs)
    return None
  return wrapper


def _gather_bools(flag: bool) -> np.ndarray:
  if jax.process_count() == 1:
    return np.asarray([bool(flag)])
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(np.asarray(bool(flag)))).reshape(-1)


def agree_any(flag: bool) -> bool:
  """True on every process if ``flag`` is True on any (a collective: all processes must call)."""
  return bool(_gather_bools(flag).any())


def agree_all(flag: bool) -> bool:
  """True on every process only if ``flag`` is True on all (a collective)."""
  return bool(_gather_bools(flag).all())


def broadcast_from_main(tree: Any) -> Any:
  """Process 0's value of a pytree of numpy-compatible leaves, on every process (a collective)."""
  if jax.process_count() == 1:
    return tree
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return multihost_utils.broadcast_one_to_all(tree)


_BARRIER_COUNT = {}


def sync(name: str, timeout_s: float = 600.0) -> None:
  """Barrier over all processes (no-op with one). ``name`` must be the same on every process.

  Uses the coordination service's barrier (``timeout_s``, default 10 min) rather than a device
  collective: CPU (gloo) collectives give up connecting after about 30 s, so a process that
  arrives at its first collective long before another (process 0 alone builds the TensorBoard
  writer, importing TensorFlow, which takes tens of seconds on a loaded machine) fails with
  "Gloo context initialization failed: Connect timeout". Call this before the first collective.
  """
  if jax.process_count() == 1:
    return
  try:  # the coordination-service client (private API; falls back to a device barrier)
    from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
    client = jax_distributed.global_state.client
  except (ImportError, AttributeError):
    client = None
  if client is None or not hasattr(client, "wait_at_barrier"):
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)
    return
  count = _BARRIER_COUNT[name] = _BARRIER_COUNT.get(name, 0) + 1   # ids are single-use
  client.wait_at_barrier(f"d2m_{name}_{count}", int(timeout_s * 1000))


def assert_same_everywhere(tree: Any, what: str = "value") -> None:
  """Raises on every process if a host value (config hash, start step, ...) differs between them."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.assert_equal(tree, f"{what} differs between processes")


def replicated_abstract_state(state_shapes: Any, mesh: jax.sharding.Mesh) -> Any:
  """``jax.ShapeDtypeStruct`` tree replicated on ``mesh``: the restore target for Orbax.

  Restoring with the CURRENT mesh's shardings (rather than the ones saved in the checkpoint) is
  what lets a checkpoint written by N processes be read by M processes.
  """
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding), state_shapes)


def describe() -> str:
  """One line: process index/count and device counts (for logs)."""
  return (f"process {jax.process_index()}/{jax.process_count()}, "
          f"{jax.local_device_count()} local / {jax.device_count()} global "
          f"{jax.devices()[0].device_kind} devices")


def parse_device_ids(value: Any) -> Optional[Sequence[int]]:
  """Public form of the local_device_ids parser (for launchers)."""
  return _parse_device_ids(value)
