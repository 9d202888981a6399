"""The numpy loader (config.data.loader=numpy) against the tf.data path, batch for batch."""
import numpy as np
import pytest

from d2m_jax.data import pipeline

# (kind, overrides): every example kind, raw-audio windows included.
CONFIGS = [("windows", dict(waveform=True)), ("windows", dict(waveform=False)),
           ("units", {}), ("sequences", dict(max_frames=180))]


def _cfg(base, **kw):
  c = base.copy_and_resolve_references()
  for k, v in kw.items():
    c[k] = v
  return c


def _assert_same(a, b):
  assert sorted(a) == sorted(b)
  for k in a:
    assert a[k].dtype == b[k].dtype, k
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _batches(c, n, **kw):
  it = pipeline.make_iterator(c, "train", **kw)
  return [next(it) for _ in range(n)]


@pytest.mark.parametrize("kind,over", CONFIGS)
def test_numpy_batches_equal_tfdata(tiny_data_cfg, kind, over):
  tf_cfg = _cfg(tiny_data_cfg, kind=kind, loader="tfdata", **over)
  np_cfg = _cfg(tiny_data_cfg, kind=kind, loader="numpy", **over)
  for split in ("train", "validation"):
    _assert_same(pipeline.load_split(tf_cfg, split), pipeline.load_split(np_cfg, split))
  assert pipeline.dataset_info(np_cfg) == pipeline.dataset_info(tf_cfg)
  n = len(pipeline.load_split(np_cfg, "train")["_seq"])
  for kw in (dict(start_step=0), dict(start_step=n // 8 + 1), dict(shuffle=False, start_step=2)):
    want, got = _batches(tf_cfg, 4, **kw), _batches(np_cfg, 4, **kw)
    for w, g in zip(want, got):
      _assert_same(w, g)
  # one pass without repeat: the same number of batches, the same rows
  want = list(pipeline.make_iterator(tf_cfg, "validation", repeat=False, batch_size=4))
  got = list(pipeline.make_iterator(np_cfg, "validation", repeat=False, batch_size=4))
  assert len(want) == len(got) >= 1
  for w, g in zip(want, got):
    _assert_same(w, g)


def test_numpy_loader_resumes_exactly(tiny_data_cfg):
  c = _cfg(tiny_data_cfg, kind="units", loader="numpy")
  n = pipeline.load_split(c, "train")["_seq"].shape[0]
  k = 2 * n // 8 + 1                                    # crosses epoch boundaries
  full = _batches(c, k + 3)
  for want, got in zip(full[k:], _batches(c, 3, start_step=k)):
    _assert_same(want, got)
  assert not np.array_equal(full[0]["units"], full[1]["units"])
  # batch k is the rows the schedule names, in its order
  arrays = pipeline.load_split(c, "train")
  idx = next(pipeline.batch_schedule(n, 8, seed=0, start_step=k))
  np.testing.assert_array_equal(full[k]["units"], arrays["units"][idx])


def test_per_process_slices_and_global_arrays(tiny_data_cfg, monkeypatch):
  import jax
  c_tf = _cfg(tiny_data_cfg, kind="windows", waveform=False, loader="tfdata")
  c_np = _cfg(tiny_data_cfg, kind="windows", waveform=False, loader="numpy")
  whole = _batches(c_np, 2, start_step=5)
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  for pid in (0, 1):
    monkeypatch.setattr(jax, "process_index", lambda pid=pid: pid)
    want, got = _batches(c_tf, 2, start_step=5), _batches(c_np, 2, start_step=5)
    for w, g, full in zip(want, got, whole):
      _assert_same(w, g)
      _assert_same(g, {k: v[4 * pid:4 * pid + 4] for k, v in full.items()})
  monkeypatch.undo()
  mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  a = next(pipeline.prefetch_to_device(pipeline.make_iterator(c_tf, "train"), mesh))
  b = next(pipeline.prefetch_to_device(pipeline.make_iterator(c_np, "train"), mesh))
  for k in a:
    assert b[k].sharding == a[k].sharding and b[k].sharding.spec == jax.P("data"), k
    np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))


def test_auto_picks_numpy_with_a_notice_when_tensorflow_is_missing(tiny_data_cfg, monkeypatch,
                                                                   capsys):
  monkeypatch.setattr(pipeline, "_TF_IMPORT", ["ModuleNotFoundError: No module named 'x'"])
  c = _cfg(tiny_data_cfg, loader="auto")
  assert pipeline.loader(c) == "numpy" and pipeline.loader(c) == "numpy"
  err = capsys.readouterr().err
  assert err.count("using the numpy loader") == 1
  monkeypatch.setattr(pipeline, "_TF_IMPORT", [None])
  assert pipeline.loader(c) == "tfdata"
  with pytest.raises(ValueError, match="auto|tfdata|numpy"):
    pipeline.loader(_cfg(tiny_data_cfg, loader="grain"))
