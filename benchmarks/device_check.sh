#!/usr/bin/env bash
# The one prepared check for a lent GPU machine (issue 22; benchmarks/device_check.py says
# what it runs). Usage, from anywhere:
#
#     benchmarks/device_check.sh [RESULTS_DIR] [--quick]      (or: make device-check)
#
# RESULTS_DIR defaults to $ENSGAN_DEVICE_RESULTS, else device-results/. It runs on the device
# machine as that machine is: its Python (3.12, torch, numpy, scikit-learn, pandas, ...), no
# package registry. What ensgan needs beyond that travels as wheels in .wheels/ (git-ignored;
# `make device-wheels` downloads them here) and is installed with pip --no-index --no-deps into
# .device-site/, never into the machine's Python (nor where that Python has them). Without CUDA it runs the CPU-runnable parts,
# says "no CUDA device", and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${ENSGAN_DEVICE_RESULTS:-device-results}"
args=()
for a in "$@"; do
  case "$a" in
    --*) args+=("$a") ;;
    *) out="$a" ;;
  esac
done
py="${PYTHON:-python3}"
site="$PWD/.device-site"
needs="import pydantic, pytest, tabulate, cronsim"
if ! "$py" -c "$needs" 2>/dev/null && compgen -G ".wheels/*.whl" >/dev/null; then
  tag="$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
  if ! compgen -G ".wheels/*-${tag}-*.whl" >/dev/null; then
    echo "device_check: .wheels/ holds no wheels for this Python ($tag, $py): run it with the" \
      "Python they were downloaded for (PYTHON=...), or download them for $tag" >&2
    exit 2
  fi
  "$py" -m pip install -q --disable-pip-version-check --no-index --no-deps --upgrade \
    --target "$site" .wheels/*.whl
  export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$py" benchmarks/device_check.py --out "$out" "${args[@]}"
