#!/usr/bin/env bash
# Device side: train the bundled-default candidate (the comparison's best loss, longer, with
# SFace distillation when $MF_DATA/teacher_sface.npy was staged) and export a <= 10 MB fp16
# model folder plus its dev metrics to $OUT. Training time is EPOCHS × (41,652 / samples/s):
# take samples/s from the comparison's results.json; at ~4,500/s, 40 epochs are ~6 min.
# Env: CONFIG (configs/arcface_mbf.yaml), EPOCHS (40), DISTILL_W (1.0; 0 disables),
# COMPILE (false), EXTRA (more --set overrides), WORKERS (16); paths: see env.sh.
source "$(dirname "$0")/env.sh"
bash "$(dirname "$0")/stage.sh" || { echo "data incomplete: run the staging calls first"; exit 3; }
CONFIG=${CONFIG:-configs/arcface_mbf.yaml}; EPOCHS=${EPOCHS:-40}; DISTILL_W=${DISTILL_W:-1.0}
COMPILE=${COMPILE:-false}; WORKERS=${WORKERS:-16}; RUN=$MF_RUNS/default
args=(--set "data.train=$MF_DATA/celeba" --set data.preload=device --set "data.workers=$WORKERS"
      --set "epochs=$EPOCHS" --set "compile=$COMPILE" --set "output=$RUN"
      --set log.progress=false --set log.every_steps=81 --set checkpoint.every_steps=1000000
      --set checkpoint.at_epoch_end=false --set verify.pairs=null --set name=marginface-mbf)
if [ -f "$MF_DATA/teacher_sface.npy" ] && [ "$DISTILL_W" != "0" ]; then
  args+=(--set "distill.teacher=$MF_DATA/teacher_sface.npy" --set "distill.weight=$DISTILL_W")
fi
set -o pipefail
# shellcheck disable=SC2086
mf train "$CONFIG" "${args[@]}" ${EXTRA:-} 2>&1 | tee "$OUT/train.log"
mkdir -p "$OUT/model"
"$PY" - "$RUN" "$OUT/model" <<'PY'
import sys, shutil, pathlib
from safetensors.torch import load_file, save_file
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
sd = {k: (v.half() if v.is_floating_point() else v)
      for k, v in load_file(src / "weights.safetensors").items()}
save_file(sd, dst / "weights.safetensors")
shutil.copy(src / "model.json", dst / "model.json")
print("exported", sum(p.stat().st_size for p in dst.iterdir()) / 1e6, "MB")
PY
cp "$RUN/metrics.csv" "$OUT/metrics.csv"
mf train-eval "$OUT/model" --dev-crops "$MF_DATA/dev_crops.npz" --json "$OUT/dev_metrics.json"
mf train-eval "$OUT/model" --dev-crops "$MF_DATA/dev_crops.npz" --flip --json "$OUT/dev_metrics_flip.json"
ls -la "$OUT" "$OUT/model"
