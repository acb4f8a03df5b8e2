# Sourced by the gpu/*.sh scripts on the device machine (python3 there is Python 3.12 with
# torch, numpy, opencv, typer, safetensors; pydantic travels as wheels in .whl/).
# Installs the carried wheels once per warm machine into /tmp/site.
set -euo pipefail
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
MF_DATA=${MF_DATA:-/tmp/mf-data}
OUT=${OUT:-/tmp/mf-out}
mkdir -p "$MF_DATA" "$OUT"
if [ -d .whl ] && [ ! -f /tmp/site/.mf-installed ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && touch /tmp/site/.mf-installed
fi
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
mf() { "$PY" -m marginface "$@"; }
