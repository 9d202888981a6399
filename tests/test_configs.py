"""d2m_jax/configs.py: the one config loader (config_flags' parser) and the optional-field get."""
import ml_collections
import pytest

from d2m_jax import configs


def test_names_and_variants_cover_the_config_files():
  files = sorted(p.stem for p in configs.CONFIG_DIR.glob("*.py") if p.stem != "__init__")
  assert list(configs.names()) == files and "style_paper" in files
  assert configs.variants("d2m_composition") == ("mocap", "openpose", "cpu")
  assert configs.variants("style_paper") == (None,)


def test_load_by_name_path_and_variant_with_typed_overrides():
  c = configs.load("d2m_composition:openpose", {"model.dance_hidden": "8", "data.batch_size": 4,
                                                "model.decomp_workdir": "/x"})
  assert c.data.source == "openpose" and c.model.pose_size == 28
  assert c.model.dance_hidden == 8 and isinstance(c.model.dance_hidden, int)   # parsed as int
  assert c.data.batch_size == 4 and c.model.decomp_workdir == "/x"
  p = configs.load(str(configs.CONFIG_DIR / "l2d_kmeans.py"),
                   ["num_train_steps=3", "final_eval_splits=('test',)", "optim.lr=1"])
  assert p.task == "l2d_kmeans" and p.num_train_steps == 3
  assert tuple(p.final_eval_splits) == ("test",)
  assert isinstance(p.optim.lr, float)     # a float field stays a float


def test_bad_overrides_name_the_field():
  with pytest.raises(KeyError, match="no field 'model.nope'"):
    configs.load("style_paper", {"model.nope": "1"})
  with pytest.raises(KeyError, match="no field 'model.nope'"):
    configs.load("style_paper", {"model.nope": 1})
  with pytest.raises(ValueError, match="model.hidden=abc"):
    configs.load("style_paper", {"model.hidden": "abc"})
  with pytest.raises(FileNotFoundError, match="no_such_model"):
    configs.load("no_such_model")


def test_module_is_the_configs_package_member():
  import configs as pkg  # pylint: disable=import-outside-toplevel
  m = configs.module("d2m_decomposition")
  assert m is pkg.d2m_decomposition
  assert m.model_config(28).pose_size == 28


def test_get_reads_optional_fields_the_same_way_everywhere():
  c = ml_collections.ConfigDict({"a": 1, "n": None, "sub": {"b": 2}})
  c.r = ml_collections.FieldReference(None, field_type=str)
  assert configs.get(c, "a", 9) == 1
  assert configs.get(c, "missing", 9) == 9
  assert configs.get(c, "n", 9) == 9 and configs.get(c, "r", "d") == "d"   # None = not set
  assert configs.get(c, "sub.b") == 2 and configs.get(c, "sub.x.y", 3) == 3
  assert configs.get({"a": {"b": 0}}, "a.b", 5) == 0                       # falsy is kept
  assert configs.get(None, "a", 4) == 4

  class Obj:
    x = 7
  assert configs.get(Obj(), "x") == 7 and configs.get(Obj(), "y", 1) == 1
