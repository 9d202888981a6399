#!/usr/bin/env bash
# Packs what a bare accelerator machine needs (no registry, no processed dataset reachable there)
# into .gpu_pack/ (ignored through .git/info/exclude; name it in the device run's `carry`):
#   .gpu_pack/wheels/  pure wheels the image lacks (ml-collections; its needs absl-py and PyYAML
#                      come with flax/orbax)
#   .gpu_pack/data/    portable training data (launch/export_data.py) of the Dancing2Music
#                      pipeline: style_paper, d2m_decomposition, d2m_composition -- every split,
#                      so the held-out test split travels too (numpy only to read);
#                      d2m_composition with --for_eval (every sequence's pose, root and
#                      d2m28: the paper metrics of accelerator_run.sh's last stage)
#   .gpu_pack/COMMIT   the commit being measured (+dirty when the tree differs): the copy sent
#                      to the device has no .git
#   bash benchmarks/pack_gpu_run.sh                     # real data: DATA_SOURCE=music_to_dance
#   DATA_SOURCE=synthetic NO_WHEELS=1 bash benchmarks/pack_gpu_run.sh   # tests: tiny, offline
# Then, on the device: bash benchmarks/accelerator_run.sh OUT (see docs/performance.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-./.venv/bin/python}"
PACK="${PACK:-.gpu_pack}"
SOURCE="${DATA_SOURCE:-music_to_dance}"
rm -rf "$PACK.tmp"
mkdir -p "$PACK.tmp/wheels" "$PACK.tmp/data"
if [[ -z "${NO_WHEELS:-}" ]]; then
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation py --platform any -d "$PACK.tmp/wheels" ml-collections==1.1.0
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
for cfg in style_paper d2m_decomposition d2m_composition; do
  for_eval=()
  [[ $cfg == d2m_composition ]] && for_eval=(--for_eval)
  "$PY" launch/export_data.py --config="configs/$cfg.py" --config.data.source="$SOURCE" \
      ${EXPORT_FLAGS:-} "${for_eval[@]}" --out="$PACK.tmp/data/$cfg.npz"
done
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
  commit="$commit+dirty"
fi
echo "$commit" > "$PACK.tmp/COMMIT"
echo "$SOURCE" > "$PACK.tmp/DATA_SOURCE"
rm -rf "$PACK"
mv "$PACK.tmp" "$PACK"
if [[ "$PACK" != /* && -d .git/info ]] && ! grep -qx "/$PACK/" .git/info/exclude 2>/dev/null; then
  echo "/$PACK/" >> .git/info/exclude
fi
echo "packed: $(ls "$PACK/wheels") data $(ls "$PACK/data") commit $(cat "$PACK/COMMIT")" \
     "($(du -sh "$PACK" | cut -f1))"
