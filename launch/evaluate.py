r"""Evaluation table: real test set (real-vs-real) and each model, against the train reference.

    python launch/evaluate.py --out_dir=runs/eval \
        --model=wgan=runs/wgan_audio --model=d2m=runs/d2m_composition \
        --style_classifier=runs/dance_style

Writes ``OUT_DIR/eval.json`` and ``OUT_DIR/eval.md`` (atomically): FID_k, FID_g, Div_k, Div_g,
BAS (motion-beat convention, the default; and music-beat convention), PFC, style consistency and
FID over the style classifier's features. The protocol (clip length, clip count, seeds, split)
is fixed in ``d2m_jax/metrics/evaluation.py`` and recorded in the JSON.
"""
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
flags.DEFINE_string("raw_dir", os.path.join(os.path.dirname(REPO), "shared", "data",
                                            "music_to_dance"), "Music-to-Dance raw folder.")
flags.DEFINE_multi_string("model", [], "NAME=WORKDIR of a trained generator (repeatable).")
flags.DEFINE_string("style_classifier", None, "Workdir of a trained dance_style classifier.")
flags.DEFINE_string("out_dir", None, "Where eval.json / eval.md go.")
flags.DEFINE_integer("split_seed", 0, "Split seed (the data pipeline's default is 0).")
flags.DEFINE_bool("compilation_cache", True, "Reuse XLA programs compiled by earlier runs (JAX's "
                  "persistent cache in $D2M_JAX_CACHE, default ~/.cache/d2m_jax/jax_cache); "
                  "--nocompilation_cache turns it off.")
flags.mark_flag_as_required("out_dir")


def main(argv):
  del argv
  import numpy as np  # pylint: disable=import-outside-toplevel
  from d2m_jax import compile_cache  # pylint: disable=import-outside-toplevel
  compile_cache.enable(FLAGS.compilation_cache)  # before the first compile
  from d2m_jax import generate  # pylint: disable=import-outside-toplevel
  from d2m_jax.data.errors import DataError  # pylint: disable=import-outside-toplevel
  from d2m_jax.metrics import evaluation as ev  # pylint: disable=import-outside-toplevel
  from d2m_jax.tasks import restore_workdir  # pylint: disable=import-outside-toplevel

  models = []
  for spec in FLAGS.model:
    if "=" not in spec:
      print(f"error: --model={spec!r}: expected NAME=WORKDIR", file=sys.stderr)
      return 2
    name, wd = spec.split("=", 1)
    if not os.path.isdir(wd):
      print(f"error: --model {name}: workdir {wd} not found", file=sys.stderr)
      return 2
    models.append((name, wd))
  t_all = time.perf_counter()
  try:
    data = ev.load_real_sequences(FLAGS.raw_dir, split_seed=FLAGS.split_seed)
  except DataError as e:
    print(f"error: bad data: {e}", file=sys.stderr)
    return 2
  train, test = data["train"], data["test"]
  ref = ev.clip_features([s.pose for s in train], train, roots=[s.root for s in train])
  real = ev.clip_features([s.pose for s in test], test, roots=[s.root for s in test])
  classifier, ref_cls, clf_info = None, None, None
  if FLAGS.style_classifier:
    state, cfg, task = restore_workdir(FLAGS.style_classifier)
    classifier = (task, state)
    _, ref_cls = task.classify(state, ref.clips)
    clf_info = dict(workdir=FLAGS.style_classifier, step=int(state.step))
  rows = {"real test (real-vs-real)": ev.row_metrics(real, ref, classifier, ref_cls)}
  if classifier is not None:
    clf_info["test_clip_accuracy"] = rows["real test (real-vs-real)"]["style_acc"]
  timings = {}
  for name, wd in models:
    t0 = time.perf_counter()
    state, cfg, task = restore_workdir(wd)
    fps = generate.task_fps(task)
    dances = []
    for seq in test:
      music = generate.music_from_wave(seq.wave, seq.sr, fps,
                                       tuple(getattr(task, "generation_features", ())),
                                       num_frames=seq.pose.shape[0], path=seq.name,
                                       beats=seq.beats)
      dances.append(generate.generate_dance(task, state, music, num_samples=1,
                                            seed=ev.SEED)[0])
    rows[name] = ev.row_metrics(ev.clip_features(dances, test), ref, classifier, ref_cls)
    rows[name]["workdir"] = wd
    rows[name]["step"] = int(np.asarray(state.step))
    timings[name] = time.perf_counter() - t0
    print(f"{name}: {rows[name]}", flush=True)
  protocol = dict(clip_frames=ev.CLIP_FRAMES, fps=ev.FPS, max_clips_per_sequence=
                  ev.MAX_CLIPS_PER_SEQUENCE, seed=ev.SEED, split_seed=FLAGS.split_seed,
                  reference="train split clips", reference_clips=int(ref.kinetic.shape[0]),
                  test_sequences=[s.name for s in test], bas_default="motion beats (FACT)",
                  bas_sigma_s=3 / 60, kinetic_window_frames=1)
  result = dict(rows=rows, protocol=protocol, classifier=clf_info,
                seconds=time.perf_counter() - t_all, model_seconds=timings)
  paths = ev.write_outputs(FLAGS.out_dir, result)
  print(ev.markdown_table(rows))
  print(f"wrote {paths['markdown']} and {paths['json']}")
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
