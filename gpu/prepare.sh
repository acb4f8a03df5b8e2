#!/usr/bin/env bash
# Here, on CPU, from the project root: put everything a GPU session needs into .gpu-data/ and
# .whl/ (both ignored by git, carried by the device calls), then print the calls to make.
#   bash gpu/prepare.sh            # shards (~127 MB in 3 parts) + dev crops (~21 MB, ~30 s)
#   bash gpu/prepare.sh --teacher  # also SFace teacher embeddings (~10.7 MB; ~20 min here)
# Env: PY (.venv/bin/python), SRC (the training set), DEV (celeba-dev pairs), SHARD_MB (55),
# TEACHER_BATCH (128). tests/train/test_gpu_flow.py runs this on a small SRC with small shards
# and carries what the printed plan says, call by call.
set -euo pipefail
PY=${PY:-.venv/bin/python}
SRC=${SRC:-../shared/data/celeba-train-112}
DEV=${DEV:-../shared/data/celeba-dev/pairs.txt}
SHARD_MB=${SHARD_MB:-55}; TEACHER_BATCH=${TEACHER_BATCH:-128}
D=.gpu-data
mkdir -p "$D"
exclude=$(git rev-parse --git-path info/exclude 2>/dev/null || true)  # .git may be a file
if [ -n "$exclude" ]; then
  mkdir -p "$(dirname "$exclude")"
  for p in /.gpu-data/ /.whl/; do
    grep -qxF "$p" "$exclude" 2>/dev/null || echo "$p" >> "$exclude"
  done
fi
# .packed marks a complete pack: an interrupted one leaves earlier shards behind, which must
# not pass for the whole set.
if [ ! -f "$D/.packed" ]; then
  rm -f "$D"/celeba-*.rec "$D"/celeba-*.idx "$D/celeba.labels.json"
  "$PY" -m marginface data pack "$SRC" "$D/celeba" --shard-size-mb "$SHARD_MB"
  touch "$D/.packed"
fi
[ -f "$D/dev_crops.npz" ] || "$PY" -m marginface train-dev-crops "$DEV" "$D/dev_crops.npz"
if [ "${1:-}" = "--teacher" ] && [ ! -f "$D/teacher_sface.npy" ]; then
  "$PY" -m marginface train-teacher "$D/celeba" "$D/teacher_sface.npy" \
    --batch-size "$TEACHER_BATCH"
fi
if [ ! -f .whl/.done ]; then
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl pydantic==2.14.4 pydantic_core==2.50.5 \
    annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0
  touch .whl/.done
fi
(cd "$D" && for f in celeba-*.rec celeba-*.idx celeba.labels.json dev_crops.npz teacher_sface.npy \
   teacher_sface.json; do if [ -f "$f" ]; then echo "$f $(stat -c %s "$f")"; fi; done) > "$D/manifest.txt"

# The plan: one staging call per shard but the last, which travels with the final call.
shards=()
for f in "$D"/celeba-*.rec; do shards+=("$(basename "$f" .rec)"); done  # sorted by the glob
n=${#shards[@]}
if [ -n "$exclude" ]; then
  tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- | tail -1 | cut -f1)
else
  tree=0; echo "not a git checkout: the size of the working tree that travels is not counted"
fi
whl=$(du -sb .whl | cut -f1)
echo "working tree that travels: $((tree / 1000000)) MB (+ .whl $((whl / 1000000)) MB); each call <= 64 MiB"
over=0
call() {  # call NUMBER COMMAND TIMEOUT FILE... : print one run(...) and check its size
  local num=$1 cmd=$2 timeout=$3 carry="\".gpu-data/manifest.txt\", \".whl\"" bytes=$((tree + whl)) f
  shift 3
  for f in "$@"; do
    carry+=", \".gpu-data/$f\""; bytes=$((bytes + $(stat -c %s "$D/$f")))
  done
  echo "$num. run(command=\"$cmd\", timeout_s=$timeout,"
  echo "       carry=[$carry])"
  if [ "$bytes" -gt $((64 * 1024 * 1024)) ]; then
    echo "   WARNING: $((bytes / 1048576)) MiB travel in this call, over 64 MiB: lower SHARD_MB"
    over=1
  fi
}
echo
echo "Device calls (back to back: the machine stays warm only ~30 s after each call):"
labels=(celeba.labels.json)
for ((i = 0; i < n - 1; i++)); do
  call $((i + 1)) "bash gpu/stage.sh" 120 "${shards[i]}.rec" "${shards[i]}.idx" "${labels[@]}"
  [ "$i" != 0 ] || echo "   (exit 2 = \"still missing\" is expected until the last part is staged)"
  labels=()
done
last=("${shards[n - 1]}.rec" "${shards[n - 1]}.idx" "${labels[@]}" dev_crops.npz)
call "$n" "bash gpu/compare.sh" 570 "${last[@]}"
echo "   -> files_at/: table.md results.json compare.log logs.tar.gz weights.tar.part-00 ..."
echo "   or, in a session for the default model, instead of $n:"
teacher=()
[ ! -f "$D/teacher_sface.npy" ] || teacher=(teacher_sface.npy teacher_sface.json)
call "$n'" "CONFIG=configs/<best>_mbf.yaml EPOCHS=40 bash gpu/train_default.sh" 570 \
  "${last[@]}" "${teacher[@]}"
echo "   -> files_at/: model/ dev_metrics.json dev_metrics_flip.json metrics.csv train.log"
echo "Then give_back()."
exit "$over"
