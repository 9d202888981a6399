#!/usr/bin/env bash
# One command from a fresh clone: install, build the embedded default dataset, train the
# Dancing2Music pipeline on it at demo scale, and dance to a song no model has heard.
#
#   bash launch/quickstart.sh [RUN_DIR]          (default RUN_DIR=runs/quickstart)
#
# Steps: venv + requirements -> procedural dataset (generated, preprocessed into TFDS) ->
# music style classifier (paper GRU-30) -> Dancing2Music decomposition (dance-unit VAE) ->
# composition (music-to-movement GAN, using the style classifier) -> a new 30 s waltz ->
# launch/generate.py -> RUN_DIR/dance.npz, dance.mp4 (with the music) and dance.gif.
# Demo scale (GRU H=256, latents 128, 800 + 100 steps) so that it finishes in minutes on a
# 2-core CPU; the README gives the paper-size commands. Re-running resumes/reuses what exists.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/quickstart}
DEC_STEPS=${DEC_STEPS:-800}     # decomposition updates (batch 16)
COMP_STEPS=${COMP_STEPS:-100}   # composition updates (batch 32)
T_START=$SECONDS
T_STAGE=$SECONDS
STAGE=""
hms() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }
# stage "title": closes the previous stage (prints its elapsed time) and opens the next.
stage() {
  if [ -n "$STAGE" ]; then
    echo "   ($STAGE: $(hms $((SECONDS - T_STAGE))), total $(hms $((SECONDS - T_START))))"
  fi
  STAGE=${1%% (*}
  T_STAGE=$SECONDS
  [ -z "$1" ] || echo "== $1"
}
trap 'rc=$?; [ $rc -eq 0 ] || echo "quickstart FAILED in stage \"$STAGE\" after $(hms $((SECONDS - T_START)))" >&2' EXIT
stage "0/6 venv and requirements"
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/pip install -q -r requirements.txt
.venv/bin/pip install -q --no-deps -e .
PY=.venv/bin/python
export TF_CPP_MIN_LOG_LEVEL=2
mkdir -p "$RUN"

stage "1/6 embedded default dataset (generated and preprocessed once, then cached)"
$PY launch/preprocess.py --source=synthetic

stage "2/6 music style classifier (paper GRU-30)"
$PY launch/train.py --config=configs/style_paper.py --workdir="$RUN/style" \
  --config.num_train_steps=1000 --config.eval_every_steps=500 --config.checkpoint_every_steps=500

# the CPU recipe (configs/d2m_*.py:cpu: demo size, beat-phase clock in the unit decoder, Adam
# 2e-3, KL 1e-3, frozen stage-1 decoder in stage 2, calibrated static-unit threshold with the
# least-static fallback) on the embedded dataset
DEMO="--config.data.source=synthetic --config.log_every_steps=25"
every() { echo "--config.num_train_steps=$1 --config.eval_every_steps=$1 --config.checkpoint_every_steps=$1"; }
stage "3/6 Dancing2Music decomposition (dance-unit VAE, demo size)"
# 800 updates at batch 16 (the unit VAE's motion grows with the number of updates; 100 at batch
# 32 are enough for the composition to follow it: docs/dancing2music.md, the quick start's runs)
# shellcheck disable=SC2046,SC2086
$PY launch/train.py --config=configs/d2m_decomposition.py:cpu --workdir="$RUN/d2m_decomp" $DEMO \
  $(every "$DEC_STEPS") --config.data.batch_size=16 --config.optim.kl_anneal_center=$((DEC_STEPS / 2))

stage "4/6 Dancing2Music composition (music-to-movement GAN, demo size)"
# shellcheck disable=SC2046,SC2086
$PY launch/train.py --config=configs/d2m_composition.py:cpu --workdir="$RUN/d2m_comp" $DEMO \
  $(every "$COMP_STEPS") --config.model.decomp_workdir="$RUN/d2m_decomp" \
  --config.model.style_workdir="$RUN/style"

stage "5/6 a song no model has heard"
$PY launch/make_song.py --style=W --seconds=30 --seed=2026 --out="$RUN/song.wav"

stage "6/6 dance to it: joints + MP4 with the music + GIF"
$PY launch/generate.py --music="$RUN/song.wav" --checkpoint="$RUN/d2m_comp" \
  --out="$RUN/dance.npz" --render
$PY launch/d2m_motion.py --workdir="$RUN/d2m_comp" --dance="$RUN/dance.npz"
stage ""
echo "done in $(hms $((SECONDS - T_START))): $RUN/dance.gif, $RUN/dance.npz"
echo "video (with the music): $(cd "$RUN" && pwd)/dance.mp4"
