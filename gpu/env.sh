# Sourced by the gpu/*.sh scripts on the device machine (python3 there is Python 3.12 with
# torch, numpy, opencv, typer, safetensors; pydantic travels as wheels in .whl/).
# Installs the carried wheels once per warm machine into $MF_TMP/site.
# Env (defaults are the device's): PY (python3), MF_TMP (/tmp: scratch outside the repo copy,
# kept while the machine stays warm), MF_DATA ($MF_TMP/mf-data), MF_RUNS ($MF_TMP/mf-runs),
# MF_SITE ($MF_TMP/site), OUT (set by the device tool; $MF_TMP/mf-out otherwise).
# tests/train/test_gpu_flow.py points all of them into a temporary folder for the CPU dry run.
set -euo pipefail
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
MF_TMP=${MF_TMP:-/tmp}
MF_DATA=${MF_DATA:-$MF_TMP/mf-data}
MF_RUNS=${MF_RUNS:-$MF_TMP/mf-runs}
MF_SITE=${MF_SITE:-$MF_TMP/site}
OUT=${OUT:-$MF_TMP/mf-out}
mkdir -p "$MF_DATA" "$MF_RUNS" "$OUT"
if [ -d .whl ] && [ ! -f "$MF_SITE/.mf-installed" ]; then
  shopt -s nullglob; wheels=(.whl/*.whl); shopt -u nullglob
  if [ "${#wheels[@]}" = 0 ]; then
    echo "env.sh: .whl/ carried but holds no wheels" >&2; exit 4
  fi
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$MF_SITE" "${wheels[@]}"
  touch "$MF_SITE/.mf-installed"
fi
export PYTHONPATH="$MF_SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
mf() { "$PY" -m marginface "$@"; }
