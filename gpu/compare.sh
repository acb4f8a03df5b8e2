#!/usr/bin/env bash
# Device side: the loss comparison. Stages this call's carried part, checks the whole data set
# is in $MF_DATA, trains each loss of configs/*_mbf.yaml for $EPOCHS epochs (training set
# preloaded in GPU memory), evaluates each on the pre-aligned celeba-dev crops, and writes
# table.md, results.json, compare.log, logs.tar.gz and weights.tar.part-NN (fp16) to $OUT.
# Expected on one H100: ~10 s per epoch per loss (4,000-4,800 samples/s), so EPOCHS=4 is about
# 45-60 s per loss, 7-8 min for all nine; --budget-s skips the losses that would not fit.
# Env: EPOCHS (4), COMPILE (false), BUDGET_S (450), SEED (0), CONFIGS (the nine, best-known
# first), EXTRA (more --set overrides), WORKERS (16); paths: see env.sh.
source "$(dirname "$0")/env.sh"
bash "$(dirname "$0")/stage.sh" || { echo "data incomplete: run the staging calls first"; exit 3; }
EPOCHS=${EPOCHS:-4}; COMPILE=${COMPILE:-false}; BUDGET_S=${BUDGET_S:-450}; SEED=${SEED:-0}
CONFIGS=${CONFIGS:-"configs/arcface_mbf.yaml configs/cosface_mbf.yaml configs/softmax_mbf.yaml
 configs/normface_mbf.yaml configs/sphereface_mbf.yaml configs/combined_mbf.yaml
 configs/subcenter_arcface_mbf.yaml configs/arcface_center_mbf.yaml configs/triplet_mbf.yaml"}
WORKERS=${WORKERS:-16}; RUNS=$MF_RUNS/compare-seed$SEED
set -o pipefail
rc=0  # train-compare exits 1 when a config failed: still pack what there is, then say so
# shellcheck disable=SC2086
mf train-compare $CONFIGS --dev-crops "$MF_DATA/dev_crops.npz" --out "$RUNS" \
  --table "$OUT/table.md" --budget-s "$BUDGET_S" \
  --set "data.train=$MF_DATA/celeba" --set data.preload=device --set "data.workers=$WORKERS" \
  --set "epochs=$EPOCHS" --set "compile=$COMPILE" --set "seed=$SEED" \
  --set log.progress=false --set checkpoint.every_steps=1000000 \
  --set checkpoint.at_epoch_end=false ${EXTRA:-} 2>&1 | tee "$OUT/compare.log" || rc=$?
cp -f "$RUNS/results.json" "$OUT/results.json" 2>/dev/null || true
"$PY" - "$RUNS" "$MF_TMP/mf-logs.tar.gz" "$MF_TMP/mf-w.tar" <<'PY'
import sys, tarfile, pathlib, io, torch
from safetensors.torch import load_file, save
runs = pathlib.Path(sys.argv[1])
with tarfile.open(sys.argv[2], "w:gz") as logs, tarfile.open(sys.argv[3], "w") as w:
    for d in sorted(p for p in runs.iterdir() if p.is_dir()):
        for name in ("model.json", "metrics.csv", "dev_metrics.json"):
            if (d / name).is_file():
                logs.add(d / name, f"{d.name}/{name}")
        if (d / "weights.safetensors").is_file():
            sd = {k: (v.half() if v.is_floating_point() else v)
                  for k, v in load_file(d / "weights.safetensors").items()}
            data = save(sd)
            info = tarfile.TarInfo(f"{d.name}/weights.fp16.safetensors"); info.size = len(data)
            w.addfile(info, io.BytesIO(data))
PY
cp "$MF_TMP/mf-logs.tar.gz" "$OUT/logs.tar.gz"
split -b 15M -d "$MF_TMP/mf-w.tar" "$OUT/weights.tar.part-"
ls -la "$OUT"
exit "$rc"
