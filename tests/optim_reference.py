"""Optimiser updates of every config in configs/ on a fixed parameter tree and fixed gradients.

Shared by tests/test_optim_paper.py and, as ``python tests/optim_reference.py --write``, the
script that wrote tests/data/optim_reference.npz from the code at commit 2374f6d (before the
one optimiser schema of d2m_jax/train/optim.py): each task's optimiser(s), as the task built
them, applied 3 times to the same tree from two starting counts (0 and 90000, past the sequence
WGAN's generator milestones 10k/35k/50k and the first of its critic's, x n_critic = 8).
"""
from __future__ import annotations

import importlib
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
REFERENCE = REPO / "tests" / "data" / "optim_reference.npz"
COUNTS = (0, 90000)
UPDATES = 3


def config_names():
  """Every config that trains (l2d_kmeans fits clusters, no optimiser)."""
  return sorted(p.stem for p in (REPO / "configs").glob("*.py")
                if p.stem not in ("__init__", "l2d_kmeans"))


def task_optimizers(task):
  """{network: optax transform} as the task holds them (one per network / module)."""
  if hasattr(task, "optimizers"):
    return dict(task.optimizers.txs)
  if hasattr(task, "g_tx"):
    return {"generator": task.g_tx, "critic": task.d_tx}
  if hasattr(task, "tx"):
    return {"main": task.tx}
  return {}


def param_tree():
  """Kernels, biases, a norm scale and an embedding (what weight-decay masks tell apart)."""
  rng = np.random.default_rng(0)
  shapes = {"Dense_0": {"kernel": (3, 4), "bias": (4,)},
            "LayerNorm_0": {"scale": (4,), "bias": (4,)},
            "Embed_0": {"embedding": (2, 3)}}
  return jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s), jnp.float32), shapes,
                      is_leaf=lambda s: isinstance(s, tuple))


def grads(i):
  rng = np.random.default_rng(100 + i)
  return jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32),
                      param_tree())


def _set_counts(state, n):
  """Every optimiser-state field named ``count`` set to ``n`` (schedules and bias corrections)."""
  def fix(path, leaf):
    name = getattr(path[-1], "name", None) if path else None
    return jnp.full_like(leaf, n) if name == "count" else leaf
  return jax.tree_util.tree_map_with_path(fix, state)


def run(tx, count):
  import optax  # pylint: disable=import-outside-toplevel
  params = param_tree()
  state = _set_counts(tx.init(params), count)
  for i in range(UPDATES):
    upd, state = tx.update(grads(i), state, params)
    params = optax.apply_updates(params, upd)
  return params


def config_updates(name, config=None):
  """{'<config>/<network>/<count>': the updated leaves, flattened and concatenated} for
  configs/<name>.py (or ``config`` in its place)."""
  from d2m_jax.tasks import get_task  # pylint: disable=import-outside-toplevel
  if config is None:
    config = importlib.import_module(f"configs.{name}").get_config()
  out = {}
  for net, tx in task_optimizers(get_task(config)).items():
    for count in COUNTS:
      leaves = jax.tree.leaves(run(tx, count))
      out[f"{name}/{net}/{count}"] = np.concatenate([np.ravel(x) for x in leaves])
  return out


if __name__ == "__main__" and "--write" in sys.argv:
  sys.path.insert(0, str(REPO))
  arrays = {}
  for n in config_names():
    got = config_updates(n)
    print(n, sorted({k.split("/")[1] for k in got}))
    arrays.update(got)
  tmp = REFERENCE.with_suffix(".tmp.npz")
  np.savez_compressed(tmp, **arrays)
  tmp.replace(REFERENCE)
  print(f"wrote {REFERENCE} ({REFERENCE.stat().st_size} bytes, {len(arrays)} arrays)")
