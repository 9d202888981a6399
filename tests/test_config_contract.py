"""The contract every config (and named variant) keeps, on a tiny shape.

For each ``configs/<name>.py[:variant]`` (``d2m_jax.configs.names()`` x ``variants()``, so a new
config is covered, or fails here, without editing this file):

* **build**: the config loads with its tiny overrides (model sizes shrunk, the rest as written),
  the Task is made and its state built (``d2m_jax.train.state.build_state``, shape-only:
  ``abstract_state``) from a synthetic batch of the pipeline's contract;
* **one train step** (jitted): every metric finite, the step counter advanced, parameters moved;
* **one evaluation** (jitted ``eval_step`` and, where the task has one, ``finalize_eval``):
  every number finite;
* **save -> restore -> identical next step**: the state after the step is checkpointed with the
  engine's checkpointer, restored onto a shape-only target, equal leaf by leaf, and the next
  step from the restored state is bit-identical to the next step from the original.

``l2d_kmeans`` is not a training task (a k-means run); its contract is the clear error
``get_task`` gives (checked). Compiling dominates the cost, so only the configs in ``FULL`` (one
per Task class at least, checked) are compiled and run; the others are TRACED (see ``FULL``);
every case's id says which it got.

The FULL run of the five configs the issue-23 refactor touched (classifiers, learn2dance GANs)
also compares its numbers with ``tests/data/refactor_golden.npz``, recorded before the refactor,
and the WGAN phases' with ``tests/data/gan_step_golden.npz``, recorded before the learn2dance
GANs moved onto their train step (see :func:`_check_golden`).
"""
import json
import math
import os
import pathlib

import jax
import numpy as np
import pytest

from d2m_jax import configs

# Per config: overrides that shrink the model (names as on the command line). Everything not
# listed runs as the config writes it. wgan_audio* share the audio-GAN shrink.
_WGAN_AUDIO = {"model.enc_channels": 2, "model.enc_code": 6, "model.latent": 10,
               "model.noise": 3, "model.size": 8, "model.n_cells": 1, "model.channels": 4,
               "model.enc_down": 1, "model.nblocks_gen": 1, "model.nblocks_critic": 1,
               "model.audio_layers": 1,
               "model.audio_channels": 2, "model.critic_code": 4, "model.critic_hidden": 4,
               "model.n_critic": 2, "model.per_update_batch": 1, "data.batch_size": 2,
               "data.eval_batch_size": 2}
_WGAN_SEQ = {"model.n_critic": 2, "model.noise": 4, "model.n_cells": 1, "model.size": 8,
             "model.channels": 4, "model.nblocks_critic": 1, "model.per_update_batch": 2,
             "data.batch_size": 4, "data.eval_batch_size": 4}
_D2M = {"model.hidden": 16, "model.z_mov": 8, "model.init_hidden": 8, "model.z_init": 4,
        "model.units_per_example": 1, "data.batch_size": 2}
TINY = {
    "style_paper": {"model.hidden": 8, "model.num_frames": 10, "model.rnn_impl": "scan",
                    "data.batch_size": 4},
    "style_improved": {"model.hidden": 8, "model.num_frames": 10, "data.batch_size": 4},
    "dance_style": {"model.channels": 8, "model.num_blocks": 1, "model.seqlen": 30,
                    "data.batch_size": 4},
    "music_style": {"model.clip_frames": 50, "model.clip_stride": 25, "model.segment_extra": 20,
                    "model.clips_per_sequence": 2, "model.num_lags": 16, "model.max_lag": 40.0,
                    "data.max_frames": 120, "data.batch_size": 3},
    "kakashi": {"model.hidden": 8, "model.num_layers": 1, "data.max_frames": 60,
                "data.batch_size": 2},
    "l2d_classifier": {"model.hidden": 8, "model.num_clusters": 4, "data.max_frames": 60,
                       "data.batch_size": 2},
    "l2d_pose_gan": {"model.hidden": 16, "data.batch_size": 2},
    "l2d_seq_gan": {"model.hidden": 16, "model.critic_hidden": 8, "model.seq_len": 10,
                    "model.rnn_impl": "scan", "data.batch_size": 4},
    "d2m_decomposition": _D2M,
    "d2m_composition": dict(_D2M, **{"model.z_dance": 8, "model.dance_hidden": 16,
                                     "model.style_input_frames": 20}),
    "wgan_pose": {"model.n_critic": 2, "model.batch_size": 8, "model.size": 8,
                  "model.latent": 4, "data.batch_size": 2},
    "wgan_seq": _WGAN_SEQ,
    "wgan_seq_conditional": _WGAN_SEQ,
}
NOT_TRAINING = {"l2d_kmeans": "is not a training task"}


def _cases():
  out = []
  for name in configs.names():
    for variant in configs.variants(name):
      out.append(name if variant is None else f"{name}:{variant}")
  return out


CASES = _cases()


def _tiny(name):
  base = name.split(":")[0]
  if base in TINY:
    return TINY[base]
  if base.startswith("wgan_audio"):
    return _WGAN_AUDIO
  raise AssertionError(f"configs/{base}.py has no tiny overrides in {__file__}: add them")


def _finite(tree, what):
  for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
    a = np.asarray(x)
    if a.dtype.kind == "f":
      assert np.all(np.isfinite(a)), f"{what}{jax.tree_util.keystr(path)} not finite: {a}"


def _float_leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)
          if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)]


def test_every_config_is_covered():
  assert len(CASES) >= 20 and "d2m_composition:openpose" in CASES
  for case in CASES:
    if case.split(":")[0] not in NOT_TRAINING:
      _tiny(case)        # raises for a config without tiny overrides


def test_every_task_class_runs_in_full():
  from d2m_jax.tasks import get_task  # pylint: disable=import-outside-toplevel
  classes = {}
  for case in CASES:
    if case.split(":")[0] not in NOT_TRAINING:
      classes.setdefault(type(get_task(configs.load(case))), []).append(case)
  missing = {cls.__name__: cases for cls, cases in classes.items()
             if not any(_level(c) == "full" for c in cases)}
  assert not missing, f"no FULL case for these Task classes: add one to FULL: {missing}"


# Run in full (compiled: build, step, evaluation, checkpoint round trip, next step): one config
# of every Task class (test_every_task_class_runs_in_full), the paper's variant where there are
# several; the classifiers and learn2dance GANs also check GOLDEN. The rest (another variant of
# a FULL config's Task class) are TRACED: built shape-only, their train and eval steps traced
# (every op's shapes and dtypes checked by JAX, no compile), the state after a step of the same
# structure, shapes and dtypes as the state the checkpoint restore target is built from. Each
# case's id says which. Measured (CPU seconds of the FULL path, XLA -O0, 2026-12-04, shared
# 2-core VM under load): 2-5 s for a classifier, kakashi, wgan_pose, the pose GAN; 8-10 s for
# the sequence GANs and a decomposition; ~15 s an audio GAN (as shrunk above); ~25 s a
# composition; init, step and eval each compiled once (build and compile dominate). All 26 in
# full: ~5 min more, over the suite's budget; this FULL set: ~+65 s over tracing them.
# D2M_CONTRACT_FULL=all (or a comma list of cases) compiles and runs those in full as well.
FULL = ("style_paper", "dance_style", "music_style", "kakashi", "l2d_classifier",
        "l2d_pose_gan", "l2d_seq_gan", "d2m_decomposition:mocap", "d2m_composition:mocap",
        "wgan_pose", "wgan_seq_conditional", "wgan_audio")
_EXTRA_FULL = os.environ.get("D2M_CONTRACT_FULL", "")
GOLDEN = pathlib.Path(__file__).parent / "data" / "refactor_golden.npz"
GAN_GOLDEN = pathlib.Path(__file__).parent / "data" / "gan_step_golden.npz"   # from 56c0ed1
GOLDEN_FILES = {"style_paper": GOLDEN, "dance_style": GOLDEN, "music_style": GOLDEN,
                "l2d_pose_gan": GOLDEN, "l2d_seq_gan": GOLDEN, "wgan_pose": GAN_GOLDEN,
                "wgan_seq_conditional": GAN_GOLDEN, "wgan_audio": GAN_GOLDEN}
REGEN = bool(os.environ.get("D2M_REGEN_GOLDEN"))


def _flat_numbers(d, prefix=""):
  """Numeric leaves of a (nested) dict/list as {dotted key: float64 array}."""
  out = {}
  if isinstance(d, dict):
    for k, v in d.items():
      out.update(_flat_numbers(v, f"{prefix}{k}."))
  elif isinstance(d, (list, tuple)) and d and isinstance(d[0], str):
    pass
  else:
    a = np.asarray([np.nan if x is None else x for x in d] if isinstance(d, list) else d)
    if a.dtype.kind in "fiub" or a.dtype == object:
      out[prefix[:-1]] = np.asarray(a, np.float64)
  return out


def _numbers(metrics1, metrics2, ev, report, state):
  """The figures compared with GOLDEN: both steps' metrics, the evaluation, its report, and a
  checksum (float64 sum and sum of squares) of every state leaf after the second step."""
  out = {}
  for i, m in enumerate((metrics1, metrics2)):
    out.update({f"step{i}/{k}": np.asarray(v, np.float64) for k, v in m.items()})
  out.update({f"eval/{k}": np.asarray(v, np.float64) for k, v in ev.items()})
  out.update({f"final/{k}": v for k, v in _flat_numbers(report or {}).items()})
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      continue
    a = np.asarray(leaf, np.float64)
    out[f"state{jax.tree_util.keystr(path)}"] = np.array([a.sum(), np.square(a).sum()])
  return out


def _check_golden(name, got, path=GOLDEN):
  """GOLDEN was recorded from the code BEFORE the issue-23 refactor (commit 2374f6d: each
  classifier with its own eval/report, the learn2dance GANs with their own gradient penalty),
  GAN_GOLDEN from 56c0ed1 (before every GAN task shared one train step; with this file's tiny
  overrides): ``D2M_REGEN_GOLDEN=1 pytest tests/test_config_contract.py -k "<name>"`` under
  this conftest (4 fake CPU devices, XLA -O0, float32). Regenerate only for a change MEANT to
  change these outputs, and say so in the commit. The shared classifier report may ADD keys
  under ``final/`` (checked against numpy here); recorded keys may not change or go missing."""
  if REGEN:
    old = dict(np.load(path)) if path.exists() else {}
    old = {k: v for k, v in old.items() if not k.startswith(name + "|")}
    old.update({f"{name}|{k}": v for k, v in got.items()})
    np.savez(path, **old)
    return
  with np.load(path) as z:
    want = {k.split("|", 1)[1]: z[k] for k in z.files if k.startswith(name + "|")}
  assert want, f"no golden numbers for {name}"
  extra = sorted(k for k in set(got) - set(want) if not k.startswith("final/"))
  assert set(want) <= set(got) and not extra, json.dumps(
      {"missing": sorted(set(want) - set(got)), "extra": extra})
  if "final/confusion" in got:  # an added balanced accuracy is the mean recall (numpy)
    conf = got["final/confusion"]
    support = conf.sum(1)
    recall = np.diag(conf)[support > 0] / support[support > 0]
    np.testing.assert_allclose(got["final/balanced_accuracy"], recall.mean(), rtol=1e-12)
  for k in sorted(want):
    np.testing.assert_allclose(got[k], want[k], rtol=2e-5, atol=1e-6, err_msg=f"{name}: {k}")


def _signature(tree):
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  return treedef, [(tuple(x.shape), str(x.dtype)) for x in leaves]


def _level(case):
  full = case in FULL or _EXTRA_FULL == "all" or case in _EXTRA_FULL.split(",")
  return "full" if full else "traced"


@pytest.mark.parametrize("case,level", [(c, _level(c)) for c in CASES])
def test_config_contract(case, level, tmp_path, monkeypatch):
  from d2m_jax.nn import rnn  # pylint: disable=import-outside-toplevel
  from d2m_jax.tasks import get_task  # pylint: disable=import-outside-toplevel
  if case.split(":")[0] in GOLDEN_FILES:
    # the goldens hold autodiff GRU gradients; the CPU default's written-out backward (same
    # maths, float32 sums in another order: tests/test_gru_seq_grad.py) moves a critic's w_dist
    # by ~3e-4 relative after two Adam steps
    monkeypatch.setattr(rnn, "SEQ_GRAD_DEFAULT", "off")
  from d2m_jax.train import checkpoint  # pylint: disable=import-outside-toplevel
  from d2m_jax.train import state as state_lib  # pylint: disable=import-outside-toplevel
  base = case.split(":")[0]
  if base in NOT_TRAINING:
    with pytest.raises(ValueError, match=NOT_TRAINING[base]):
      get_task(configs.load(case))
    return
  config = configs.load(case, dict(_tiny(case), dtype="float32", num_devices=1))
  task = get_task(config)
  batch = task.synthetic_batch(int(config.data.batch_size), np.random.default_rng(0))
  key = jax.random.key(int(config.seed))

  if level == "traced":
    abstract = state_lib.abstract_state(task, key, batch, None)
    after, metrics = jax.eval_shape(task.train_step, abstract, batch)
    assert _signature(after) == _signature(abstract), "the step changes the state's layout"
    assert "loss" in metrics and metrics["loss"].shape == () and \
        metrics["loss"].dtype == np.float32, metrics
    ev = jax.eval_shape(task.eval_step, after, batch)
    assert all(v.dtype.kind in "fi" for v in jax.tree.leaves(ev)), ev
    return

  # Committed to the device the restore target names, so the state in memory and the restored
  # one hit the same compiled step (an uncommitted state would compile the step a second time).
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  state0 = jax.device_put(state_lib.build_state(task, key, batch, None), device)
  step = jax.jit(task.train_step)
  state1, metrics1 = step(state0, batch)
  assert "loss" in metrics1 and math.isfinite(float(metrics1["loss"])), metrics1
  _finite(metrics1, "train metric ")
  assert int(state1.step) == int(state0.step) + 1
  assert _signature(state1) == _signature(state0)
  moved = [not np.array_equal(a, b) for a, b in
           zip(_float_leaves(state0), _float_leaves(state1))]
  assert any(moved), "the train step changed no parameter"

  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=1, async_save=False)
  ckpt.save(1, state1, {"step": 1})
  ckpt.wait()
  target = state_lib.abstract_state(task, key, batch, None, sharding=device)
  restored, meta = ckpt.restore(target)
  ckpt.close()
  assert meta == {"step": 1}
  for a, b in zip(_float_leaves(state1), _float_leaves(restored)):
    np.testing.assert_array_equal(a, b)
  state2, metrics2 = step(state1, batch)
  state2r, metrics2r = step(restored, batch)
  for a, b in zip(_float_leaves((state2, metrics2)), _float_leaves((state2r, metrics2r))):
    np.testing.assert_array_equal(a, b)   # bit-identical next step after restore

  ev = jax.jit(task.eval_step)(state2, batch)
  _finite(ev, "eval metric ")
  report = None
  if task.supports("finalize_eval"):
    report = task.finalize_eval({k: np.asarray(v) for k, v in ev.items()})
    _finite({k: v for k, v in report.items() if isinstance(v, (int, float))}, "report ")
  if case in GOLDEN_FILES:
    _check_golden(case, _numbers(metrics1, metrics2, ev, report, state2), GOLDEN_FILES[case])
