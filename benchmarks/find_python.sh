# Sourced by the GPU-run scripts: sets PY to the first Python that has jax ($PYTHON,
# ./.venv/bin/python, python3), or exits 2 naming the calling script.
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  for cand in ./.venv/bin/python python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c "import jax" >/dev/null 2>&1; then
      PY="$cand"; break
    fi
  done
fi
if [[ -z "$PY" ]]; then
  echo "$(basename "$0"): no Python with jax found (set PYTHON=...)" >&2; exit 2
fi
