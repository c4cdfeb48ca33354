#!/usr/bin/env bash
# Runs the default (fast) test set once per Keras backend. Extra args go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || PY=python
status=0
for backend in tensorflow jax torch; do
  echo "=== KERAS_BACKEND=$backend ==="
  KERAS_BACKEND=$backend "$PY" -m pytest -q "$@" || status=1
done
exit $status
