#!/usr/bin/env bash
# Device side: copy whatever part of the training data this call carried (.gpu-data/ in the
# repo copy) to $MF_DATA (/tmp/mf-data, kept while the machine stays warm), then report which
# files of .gpu-data/manifest.txt are staged. Exit 0 when all are, 2 when some are missing.
# Usage (device): bash gpu/stage.sh
source "$(dirname "$0")/env.sh"
t0=$(date +%s)
if [ -d .gpu-data ]; then
  for f in .gpu-data/*; do
    [ -f "$f" ] || continue
    cp -f "$f" "$MF_DATA/" && echo "staged $(basename "$f") ($(stat -c %s "$f") bytes)"
  done
fi
[ -f .gpu-data/manifest.txt ] || { echo "no .gpu-data/manifest.txt carried"; exit 2; }
missing=0
while read -r name size; do
  [ -n "$name" ] || continue
  case "$name" in teacher_*) optional=1 ;; *) optional=0 ;; esac
  if [ "$(stat -c %s "$MF_DATA/$name" 2>/dev/null || echo 0)" != "$size" ]; then
    if [ "$optional" = 1 ]; then echo "not staged (optional): $name"; continue; fi
    echo "missing: $name"; missing=$((missing + 1))
  fi
done < .gpu-data/manifest.txt
echo "stage: $(($(date +%s) - t0)) s; $missing file(s) of the manifest still missing in $MF_DATA"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>/dev/null || true
[ "$missing" = 0 ] || exit 2
