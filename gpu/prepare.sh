#!/usr/bin/env bash
# Here, on CPU, from the project root: put everything a GPU session needs into .gpu-data/ and
# .whl/ (both ignored by git, carried by the device calls), then print the calls to make.
#   bash gpu/prepare.sh            # shards (~127 MB in 3 parts) + dev crops (~21 MB, ~30 s)
#   bash gpu/prepare.sh --teacher  # also SFace teacher embeddings (~10.7 MB; ~20 min here)
set -euo pipefail
PY=${PY:-.venv/bin/python}
SRC=${SRC:-../shared/data/celeba-train-112}
DEV=${DEV:-../shared/data/celeba-dev/pairs.txt}
D=.gpu-data
mkdir -p "$D"
for p in /.gpu-data/ /.whl/; do
  grep -qxF "$p" .git/info/exclude 2>/dev/null || echo "$p" >> .git/info/exclude
done
[ -f "$D/celeba-00000.rec" ] || "$PY" -m marginface data pack "$SRC" "$D/celeba" --shard-size-mb 55
[ -f "$D/dev_crops.npz" ] || "$PY" -m marginface train-dev-crops "$DEV" "$D/dev_crops.npz"
if [ "${1:-}" = "--teacher" ] && [ ! -f "$D/teacher_sface.npy" ]; then
  "$PY" -m marginface train-teacher "$D/celeba" "$D/teacher_sface.npy" --batch-size 128
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
tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- | tail -1 | cut -f1)
echo "working tree that travels: $((tree / 1000000)) MB (+ .whl $(du -sm .whl | cut -f1) MB); each call <= 64 MiB"
c="\".gpu-data/manifest.txt\", \".whl\""
t=""; [ -f "$D/teacher_sface.npy" ] && t=", \".gpu-data/teacher_sface.npy\", \".gpu-data/teacher_sface.json\""
cat <<PLAN

Device calls (back to back: the machine stays warm only ~30 s after each call):
1. run(command="bash gpu/stage.sh", timeout_s=120,
       carry=[$c, ".gpu-data/celeba-00000.rec", ".gpu-data/celeba-00000.idx", ".gpu-data/celeba.labels.json"])
   (exit 2 = "still missing" is expected after this call)
2. run(command="bash gpu/stage.sh", timeout_s=120,
       carry=[$c, ".gpu-data/celeba-00001.rec", ".gpu-data/celeba-00001.idx"])
3. run(command="bash gpu/compare.sh", timeout_s=570,
       carry=[$c, ".gpu-data/celeba-00002.rec", ".gpu-data/celeba-00002.idx", ".gpu-data/dev_crops.npz"])
   -> files_at/: table.md results.json compare.log logs.tar.gz weights.tar.part-00 ...
   or, in a session for the default model, instead of 3:
3'. run(command="CONFIG=configs/<best>_mbf.yaml EPOCHS=40 bash gpu/train_default.sh", timeout_s=570,
       carry=[$c, ".gpu-data/celeba-00002.rec", ".gpu-data/celeba-00002.idx", ".gpu-data/dev_crops.npz"$t])
Then give_back().
PLAN
