#!/usr/bin/env bash
# The gpu preset of the benchmark suite (benchmarks/suite.py), ready to run unattended on a
# bare GPU machine whose Python has jax, flax, optax, numpy and torch but not ml-collections.
#
#   bash benchmarks/pack_gpu_run.sh                  # here, once: wheels + COMMIT -> .gpu_pack/
#   bash benchmarks/gpu_suite.sh --out_dir=$OUT      # there (carry .gpu_pack); <= 8 min
#   bash benchmarks/gpu_suite.sh --smoke             # anywhere: tiny sizes, CPU is fine
#   (further flags go to benchmarks/suite.py: --only=..., --budget_s=..., --preset=...)
#
# Installs .gpu_pack/wheels/*.whl (if present) into a private folder on PYTHONPATH, exports
# D2M_COMMIT from .gpu_pack/COMMIT when the copy has no .git, and runs the suite with the
# first Python that has jax: $PYTHON, ./.venv/bin/python, python3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source benchmarks/find_python.sh   # -> PY
if compgen -G ".gpu_pack/wheels/*.whl" >/dev/null; then
  SITE="${TMPDIR:-/tmp}/d2m_gpu_site"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" .gpu_pack/wheels/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
if [[ -z "${D2M_COMMIT:-}" && -f .gpu_pack/COMMIT ]] && ! git rev-parse HEAD >/dev/null 2>&1; then
  D2M_COMMIT="$(cat .gpu_pack/COMMIT)"; export D2M_COMMIT
fi
export PYTHONUNBUFFERED=1
exec "$PY" -m benchmarks.suite --preset=gpu "$@"
