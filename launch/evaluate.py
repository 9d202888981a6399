r"""Evaluation table: real test set (real-vs-real) and each model, against the train reference;
music style classifiers on the same test sequences.

    python launch/evaluate.py --out_dir=runs/eval \
        --model=wgan=runs/wgan_audio --model=d2m=runs/d2m_composition \
        --style_classifier=runs/dance_style --style_model=paper=runs/style_paper

    # sequences no model saw (raw Music-to-Dance layout; music-only folders count for style)
    python launch/evaluate.py --out_dir=runs/eval_unseen --test_raw_dir=/path/to/held_out \
        --model=d2m=runs/d2m_composition --style_model=runs/music_style

    # from a portable export (launch/export_data.py --for_eval): no processed dataset, no
    # TensorFlow, no librosa; a trained workdir's own evaluators plus the paper metrics
    python launch/evaluate.py --out_dir=runs/eval --evals_of=runs/d2m_composition \
        --portable=portable/d2m_composition.npz \
        --add_eval=paper_test,dance_metrics,test,0 --evals=paper_test

Writes ``OUT_DIR/eval.json`` and ``OUT_DIR/eval.md`` (atomically): FID_k, FID_g, Div_k, Div_g,
FID_k / Div_k in the AIST++ convention, BAS (motion-beat convention, the default; and music-beat
convention), PFC, style consistency and FID over the style classifier's features; and per
``--style_model`` ``music_style.<name>.{clip_accuracy, balanced_accuracy, sequence_accuracy,
per_class, confusion}``. The test sequences are the data's test split, or with
``--test_raw_dir`` every ``DANCE_*`` folder of that directory, preprocessed like the training data
(each model normalises with the training statistics in its checkpoint). The protocol (clip length,
clip count, seeds, split) is fixed in ``d2m_jax/metrics/evaluation.py`` and recorded in the JSON.
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
flags.DEFINE_multi_string("style_model", [], "[NAME=]WORKDIR of a trained music style "
                          "classifier (style_paper / style_improved / music_style; repeatable).")
flags.DEFINE_string("test_raw_dir", None, "Evaluate on the DANCE_* folders of this directory "
                    "(raw Music-to-Dance layout) instead of the data's test split.")
flags.DEFINE_string("out_dir", None, "Where eval.json / eval.md go.")
flags.DEFINE_bool("processed", None, "Read the train/test sequences from the preprocessed real "
                  "dataset (poses, beats, music features computed at preprocessing: no audio "
                  "decoding, no librosa). Default: only where librosa cannot be imported.")
flags.DEFINE_integer("split_seed", 0, "Split seed (the data pipeline's default is 0).")
flags.DEFINE_bool("compilation_cache", True, "Reuse XLA programs compiled by earlier runs (JAX's "
                  "persistent cache in $D2M_JAX_CACHE, default ~/.cache/d2m_jax/jax_cache); "
                  "--nocompilation_cache turns it off.")
flags.DEFINE_string("evals_of", None, "A training workdir: run its config.evals (the same "
                    "evaluators the training loop ran) on its latest checkpoint and write "
                    "OUT_DIR/eval.json; --evals picks some of them.")
flags.DEFINE_list("evals", [], "With --evals_of: the evaluator names to run (default: all).")
flags.DEFINE_multi_string("add_eval", [], "With --evals_of: NAME,KIND,SPLIT,EVERY_STEPS adds "
                          "an evaluator to the workdir's config.evals for this evaluation (e.g. "
                          "paper_test,dance_metrics,test,0), repeatable.")
flags.DEFINE_multi_string("set_gen", [], "With --evals_of: model.gen_KEY=VALUE, a generation "
                          "setting to score on the checkpoint instead of its own (e.g. "
                          "model.gen_style_mode=sliding), repeatable.")
flags.DEFINE_string("step", None, "The checkpoint of --evals_of / every --model workdir: a "
                    "step, or 'best' (the step WORKDIR/best.json names, config.keep_best); "
                    "default: the latest.")
flags.DEFINE_string("portable", None, "A portable export made with launch/export_data.py "
                    "--for_eval: read the train/test sequences from it (no processed dataset, "
                    "TensorFlow or librosa); with --evals_of it replaces the workdir's "
                    "config.data.portable.")
flags.mark_flag_as_required("out_dir")


def _workdirs(specs, flag, need_name, tasks):
  """[(name, workdir)] from NAME=WORKDIR (or WORKDIR: name = its basename) specs; each a trained
  workdir of one of ``tasks`` (checked on its config.json and checkpoints, before any data)."""
  from d2m_jax.train import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  out = []
  for spec in specs:
    if "=" in spec:
      name, wd = spec.split("=", 1)
    elif need_name:
      raise ValueError(f"--{flag}={spec!r}: expected NAME=WORKDIR")
    else:
      name, wd = os.path.basename(os.path.normpath(spec)), spec
    if not os.path.isdir(wd):
      raise ValueError(f"--{flag} {name}: workdir {wd} not found")
    workdir_lib.check_trained_workdir(wd, f"--{flag} {name}", tasks)
    if name in [n for n, _ in out]:
      raise ValueError(f"--{flag}: name {name!r} given twice")
    out.append((name, wd))
  return out


def _real_data_config():
  """``config.data`` of the sequences the table reads: the preprocessed real dataset, or the
  ``--portable`` file (its own source)."""
  from d2m_jax.data import portable  # pylint: disable=import-outside-toplevel
  from d2m_jax.train.defaults import data_config  # pylint: disable=import-outside-toplevel
  cfg = data_config()
  cfg.source = "music_to_dance"
  if FLAGS.portable:
    cfg.portable = os.path.abspath(FLAGS.portable)
    cfg.source = portable.PortableData(cfg.portable).manifest["source"]
  return cfg


def _evals_of(workdir: str, names) -> int:
  """``--evals_of``: the workdir's own evaluators on its latest checkpoint."""
  from d2m_jax import files  # pylint: disable=import-outside-toplevel
  from d2m_jax.metrics import evaluation  # pylint: disable=import-outside-toplevel,unused-import
  from d2m_jax.tasks import restore_workdir  # pylint: disable=import-outside-toplevel
  from d2m_jax.train import checkpoint, evaluators  # pylint: disable=import-outside-toplevel
  cfg = checkpoint.load_config(workdir)
  try:
    if FLAGS.portable:
      with cfg.unlocked():
        cfg.data.portable = os.path.abspath(FLAGS.portable)
    evaluators.add_evals(cfg, FLAGS.add_eval)
    gen_settings = evaluators.set_generation(cfg, FLAGS.set_gen)
    step = checkpoint.resolve_step(workdir, FLAGS.step)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  state, cfg, task = restore_workdir(workdir, config=cfg, step=step)
  try:
    results = evaluators.evaluate_state(cfg, task, state, names)
  except ValueError as e:
    print(f"error: --evals_of {workdir}: {e}", file=sys.stderr)
    return 2
  for name, metrics in results.items():
    print(f"{name}: {evaluators.describe(metrics)}", flush=True)
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  path = os.path.join(FLAGS.out_dir, "eval.json")
  files.write_json(path, dict(workdir=workdir, step=int(state.step), set_gen=gen_settings,
                              evals=results), indent=1)
  print(f"wrote {path}")
  return 0


def main(argv):
  del argv
  import numpy as np  # pylint: disable=import-outside-toplevel
  from d2m_jax import host_memory  # pylint: disable=import-outside-toplevel
  host_memory.configure_or_exit()  # $D2M_HOST_MALLOC or keep; before JAX starts
  from d2m_jax import compile_cache  # pylint: disable=import-outside-toplevel
  compile_cache.enable(FLAGS.compilation_cache)  # before the first compile
  if FLAGS.portable and not os.path.isfile(FLAGS.portable):
    print(f"error: --portable={FLAGS.portable}: no such file (write it with "
          "launch/export_data.py --for_eval)", file=sys.stderr)
    return 2
  if FLAGS.evals_of:
    return _evals_of(FLAGS.evals_of, FLAGS.evals)
  if FLAGS.add_eval or FLAGS.set_gen:
    print("error: --add_eval and --set_gen need --evals_of=WORKDIR", file=sys.stderr)
    return 2
  if FLAGS.portable and (FLAGS.test_raw_dir or FLAGS.style_model):
    print("error: --portable reads the pose, root, beats and generation features of its "
          "sequences: --test_raw_dir and --style_model need the raw or processed data",
          file=sys.stderr)
    return 2
  from d2m_jax import generate  # pylint: disable=import-outside-toplevel
  from d2m_jax.data.errors import DataError  # pylint: disable=import-outside-toplevel
  from d2m_jax.data.skeleton import STYLES  # pylint: disable=import-outside-toplevel
  from d2m_jax.metrics import evaluation as ev  # pylint: disable=import-outside-toplevel
  from d2m_jax.metrics import style_eval, unseen  # pylint: disable=import-outside-toplevel
  from d2m_jax.tasks import restore_workdir  # pylint: disable=import-outside-toplevel

  from d2m_jax.tasks import (DANCE_CLASSIFIER_TASKS, GENERATOR_TASKS,  # pylint: disable=import-outside-toplevel
                             STYLE_MODEL_TASKS)
  from d2m_jax.train import checkpoint, cli  # pylint: disable=import-outside-toplevel
  from d2m_jax.train import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  try:
    models = _workdirs(FLAGS.model, "model", True, GENERATOR_TASKS)
    model_steps = {name: checkpoint.resolve_step(wd, FLAGS.step) for name, wd in models}
    style_models = _workdirs(FLAGS.style_model, "style_model", False, STYLE_MODEL_TASKS)
    if FLAGS.style_classifier:
      workdir_lib.check_trained_workdir(FLAGS.style_classifier, "--style_classifier",
                                        DANCE_CLASSIFIER_TASKS)
    if os.path.exists(FLAGS.out_dir) and not os.path.isdir(FLAGS.out_dir):
      raise workdir_lib.WorkdirError(f"--out_dir={FLAGS.out_dir} is a file, not a folder")
    workdir_lib.check_not_locked(os.path.join(FLAGS.out_dir, "eval.json"), "--out_dir")
  except (ValueError, *cli.USER_ERRORS) as e:
    cli.fail(str(e), 2)
  t_all = time.perf_counter()
  items = None   # unseen.TestSequence per test sequence with audio (music style, generation)
  import importlib.util  # pylint: disable=import-outside-toplevel
  use_processed = (importlib.util.find_spec("librosa") is None if FLAGS.processed is None
                   else FLAGS.processed) or bool(FLAGS.portable)
  try:
    if FLAGS.test_raw_dir:
      items = unseen.load_raw_dir(FLAGS.test_raw_dir)
      gen_seqs = [ev.eval_sequence(it.processed, it.has_motion) for it in items]
      test = [s for s, it in zip(gen_seqs, items) if it.has_motion]
      need_ref = bool(models or test or FLAGS.style_classifier)
      train = ev.load_real_sequences(FLAGS.raw_dir, ("train",), split_seed=FLAGS.split_seed,
                                     audio_splits=())["train"] if need_ref else []
      seen = sorted({s.name for s in train} & {it.name for it in items})
      if seen:
        print(f"warning: {FLAGS.test_raw_dir} has sequence names of the training split: {seen}")
    elif use_processed:
      data_cfg = _real_data_config()
      train, test, items = ev.split_inputs(data_cfg, "test")
      gen_seqs = test
    else:
      data = ev.load_real_sequences(FLAGS.raw_dir, split_seed=FLAGS.split_seed)
      train, test = data["train"], data["test"]
      gen_seqs = test
      if style_models:
        items = ev.processed_test_sequences()
  except DataError as e:
    print(f"error: bad data: {e}", file=sys.stderr)
    return 2
  rows, timings, classifier, ref_cls, clf_info = {}, {}, None, None, None
  if train:
    ref = ev.clip_features([s.pose for s in train], train, roots=[s.root for s in train])
    if FLAGS.style_classifier:
      state, cfg, task = restore_workdir(FLAGS.style_classifier)
      classifier = (task, state)
      _, ref_cls = task.classify(state, ref.clips)
      clf_info = dict(workdir=FLAGS.style_classifier, step=int(state.step))
    if any(s.pose.shape[0] >= ev.CLIP_FRAMES for s in test):
      real = ev.clip_features([s.pose for s in test], test, roots=[s.root for s in test])
      rows["real test (real-vs-real)"] = ev.row_metrics(real, ref, classifier, ref_cls)
      if classifier is not None:
        clf_info["test_clip_accuracy"] = rows["real test (real-vs-real)"]["style_acc"]
  for name, wd in models:
    t0 = time.perf_counter()
    state, cfg, task = restore_workdir(wd, step=model_steps[name])
    fps = generate.task_fps(task)
    names = tuple(task.generation_features)
    if FLAGS.test_raw_dir or use_processed:
      if not FLAGS.test_raw_dir:
        try:
          ev.require_arrays(data_cfg, names, f"--model {name} (generation)")
        except DataError as e:
          print(f"error: bad data: {e}", file=sys.stderr)
          return 2
      musics = ev.musics_of(items, names)
    else:
      musics = [generate.music_from_wave(seq.wave, seq.sr, fps, names,
                                         num_frames=seq.pose.shape[0], path=seq.name,
                                         beats=seq.beats) for seq in gen_seqs]
    rows[name] = ev.generated_row(task, state, gen_seqs, musics, ref, classifier, ref_cls)
    rows[name]["workdir"] = wd
    rows[name]["step"] = int(np.asarray(state.step))
    timings[name] = time.perf_counter() - t0
    print(f"{name}: {rows[name]}", flush=True)
  music_style = {}
  for name, wd in style_models:
    t0 = time.perf_counter()
    state, cfg, task = restore_workdir(wd)
    try:
      rep = style_eval.evaluate_model(task, state, items, STYLES)
    except ValueError as e:
      print(f"error: --style_model {name} ({wd}): {e}", file=sys.stderr)
      return 2
    rep.update(workdir=wd, step=int(np.asarray(state.step)), config_task=str(cfg.task))
    music_style[name] = rep
    timings[f"style:{name}"] = time.perf_counter() - t0
    print(f"{name}: clip acc {rep['clip_accuracy']:.3f}, balanced {rep['balanced_accuracy']:.3f},"
          f" sequences {rep['sequence_accuracy']:.3f} ({rep['sequences']})", flush=True)
  protocol = dict(clip_frames=ev.CLIP_FRAMES, fps=ev.FPS, max_clips_per_sequence=
                  ev.MAX_CLIPS_PER_SEQUENCE, seed=ev.SEED, split_seed=FLAGS.split_seed,
                  reference="train split clips", reference_clips=int(ref.kinetic.shape[0])
                  if train else 0, test_raw_dir=FLAGS.test_raw_dir,
                  test_sequences=[s.name for s in test],
                  generation_sequences=[s.name for s in gen_seqs],
                  style_sequences=[it.name for it in items] if items else [],
                  bas_default="motion beats (FACT)", bas_sigma_s=3 / 60,
                  kinetic_window_frames=1, kinetic_conventions=["ours", "aist"])
  result = dict(rows=rows, protocol=protocol, classifier=clf_info, music_style=music_style,
                seconds=time.perf_counter() - t_all, model_seconds=timings)
  paths = ev.write_outputs(FLAGS.out_dir, result)
  if rows:
    print(ev.markdown_table(rows))
  if music_style:
    print(style_eval.markdown_table(music_style))
  print(f"wrote {paths['markdown']} and {paths['json']}")
  return 0


if __name__ == "__main__":
  from d2m_jax.train import cli as _cli  # noqa: E402  pylint: disable=g-import-not-at-top
  app.run(lambda argv: sys.exit(_cli.guarded(main, argv, code=2)),
          flags_parser=_cli.flags_parser(()))
