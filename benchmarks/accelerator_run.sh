#!/usr/bin/env bash
# One prepared accelerator run (issue 25): the GPU suite's table, then the Dancing2Music pipeline
# (style classifier -> decomposition -> composition) on the packed portable data, each stage
# bounded by wall clock (config.max_train_seconds: stop, checkpoint, final evaluation on the
# validation and held-out test splits), then the motion ratio of the composition on the test
# split and its paper metrics there (FID_k, FID_g, Div_k, Div_g, BAS and their real-vs-real
# floor: the dance_metrics evaluator, read from the packed --for_eval export; OUT/paper_metrics/
# eval.json). From a clean checkout plus .gpu_pack/ (benchmarks/pack_gpu_run.sh), on an image with
# jax, flax, optax, orbax, numpy and torch only; about 12 minutes with the defaults:
#
#   bash benchmarks/accelerator_run.sh $OUT
#
# Knobs (environment): SUITE_BUDGET_S (default 400; 0 skips the suite), SUITE_ONLY, STYLE_S, DECOMP_S,
# COMP_S (training seconds per stage after compiling; 20/80/90), TINY=1 (tiny models and the suite's smoke
# preset: a CPU rehearsal), PACK (default .gpu_pack). Every stage runs even when an earlier one
# failed (its exit code is in OUT/stages.tsv); the script exits non-zero if any stage failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${1:?usage: accelerator_run.sh OUT_DIR}"
PACK="${PACK:-.gpu_pack}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
source benchmarks/find_python.sh   # -> PY
[[ -d "$PACK/data" ]] || { echo "accelerator_run.sh: $PACK/data missing: run benchmarks/pack_gpu_run.sh first" >&2; exit 2; }
if compgen -G "$PACK/wheels/*.whl" >/dev/null; then
  SITE="${TMPDIR:-/tmp}/d2m_gpu_site"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" "$PACK"/wheels/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
if [[ -z "${D2M_COMMIT:-}" && -f "$PACK/COMMIT" ]] && ! git rev-parse HEAD >/dev/null 2>&1; then
  D2M_COMMIT="$(cat "$PACK/COMMIT")"; export D2M_COMMIT
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # this checkout's d2m_jax, not an installed one
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
SOURCE="$(cat "$PACK/DATA_SOURCE" 2>/dev/null || echo music_to_dance)"
DATA="$(cd "$PACK/data" && pwd)"
FAILED=0
printf 'stage\texit\tseconds\n' > "$OUT/stages.tsv"

stage() {  # stage NAME CMD...: runs, logs to OUT/NAME.log, records the exit code
  local name="$1"; shift
  local t0=$SECONDS
  echo "[accelerator_run] $name: $*"
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >> "$OUT/stages.tsv"
  echo "[accelerator_run] $name: exit $rc after $((SECONDS - t0)) s"
  [[ $rc -eq 0 ]] || FAILED=1
}

# The gpu preset's compare sections (their budgets sum to 400 s; a budget below the sum of the
# sections run would skip the first ones, see benchmarks/suite.py); the batch sweep is left out.
COMPARE=decomposition_bf16,decomposition_bf16_scan_cmdbuf,decomposition_f32,style_gru512x2_f32
COMPARE=$COMPARE,wgan_audio_f32,composition_f32
if [[ "${SUITE_BUDGET_S:-400}" != 0 ]]; then
  suite=(--out_dir="$OUT/suite" --budget_s="${SUITE_BUDGET_S:-400}")
  if [[ -n "${TINY:-}" ]]; then
    suite+=(--preset=smoke --only="${SUITE_ONLY:-sweep_decomposition}")
  else
    suite+=(--preset=gpu --only="${SUITE_ONLY:-$COMPARE}")
  fi
  stage suite "$PY" -m benchmarks.suite "${suite[@]}"
  cat "$OUT"/suite/*.md 2>/dev/null
fi

common=(--config.data.source="$SOURCE" --config.num_train_steps=1000000
        --config.log_every_steps=50 --config.eval_every_steps=1000000
        --config.checkpoint_every_steps=1000000)
small=()
if [[ -n "${TINY:-}" ]]; then
  common+=(--config.data.batch_size=8 --config.data.eval_batch_size=8 --config.num_eval_batches=1)
  small=(--config.model.hidden=16 --config.model.z_mov=8 --config.model.init_hidden=8)
fi
stage style "$PY" launch/train.py --config=configs/style_paper.py --workdir="$OUT/style" \
    "${common[@]}" --config.data.portable="$DATA/style_paper.npz" \
    --config.max_train_seconds="${STYLE_S:-20}"
stage decomposition "$PY" launch/train.py --config=configs/d2m_decomposition.py \
    --workdir="$OUT/d2m_decomp" "${common[@]}" "${small[@]}" \
    --config.data.portable="$DATA/d2m_decomposition.npz" --config.max_train_seconds="${DECOMP_S:-80}"
comp_small=()
[[ -n "${TINY:-}" ]] && comp_small=(--config.model.z_dance=8 --config.model.dance_hidden=16)
stage composition "$PY" launch/train.py --config=configs/d2m_composition.py \
    --workdir="$OUT/d2m_comp" "${common[@]}" "${small[@]}" "${comp_small[@]}" \
    --config.model.decomp_workdir="$OUT/d2m_decomp" --config.model.style_workdir="$OUT/style" \
    --config.data.portable="$DATA/d2m_composition.npz" --config.max_train_seconds="${COMP_S:-90}"
stage motion "$PY" launch/d2m_motion.py --workdir="$OUT/d2m_comp" --split=test \
    --num_examples="${MOTION_EXAMPLES:-96}" --out="$OUT/d2m_motion_test.json"
stage paper_metrics "$PY" launch/evaluate.py --evals_of="$OUT/d2m_comp" \
    --portable="$DATA/d2m_composition.npz" --add_eval=paper_test,dance_metrics,test,0 \
    --evals=paper_test --out_dir="$OUT/paper_metrics"
grep -h '^paper_test:' "$OUT/paper_metrics.log" 2>/dev/null
echo "[accelerator_run] stages:"; cat "$OUT/stages.tsv"
exit $FAILED
