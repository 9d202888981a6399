#!/usr/bin/env bash
# Packs what benchmarks/gpu_suite.sh needs on a bare GPU machine (no registry reachable there)
# into .gpu_pack/ (ignored through .git/info/exclude; name it in the device run's `carry`):
#   .gpu_pack/wheels/  pure wheels the GPU image lacks (ml-collections; its needs absl-py and
#                      PyYAML are in the image)
#   .gpu_pack/COMMIT   the commit being measured (+dirty when the tree differs): the copy sent
#                      to the device has no .git
# Then, on the device (see the performance docs):
#   bash benchmarks/gpu_suite.sh --out_dir=$OUT
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-./.venv/bin/python}"
PACK=.gpu_pack
rm -rf "$PACK.tmp"
mkdir -p "$PACK.tmp/wheels"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation py --platform any -d "$PACK.tmp/wheels" ml-collections==1.1.0
commit="$(git rev-parse --short HEAD)"
if [[ -n "$(git status --porcelain --untracked-files=no)" ]]; then commit="$commit+dirty"; fi
echo "$commit" > "$PACK.tmp/COMMIT"
rm -rf "$PACK"
mv "$PACK.tmp" "$PACK"
if [[ -d .git/info ]] && ! grep -qx '/.gpu_pack/' .git/info/exclude 2>/dev/null; then
  echo '/.gpu_pack/' >> .git/info/exclude
fi
echo "packed: $(ls "$PACK/wheels") commit $(cat "$PACK/COMMIT") ($(du -sh "$PACK" | cut -f1))"
