#!/usr/bin/env bash
# Continue the shipped QM9 conformer model's training on a GPU box that has no RDKit.
#
# Inputs (prepared on a machine with RDKit and the QM9 cache, then copied over):
#   $DATA/qm9_train.safetensors.xz, $DATA/qm9_valid1k.safetensors.xz  -- PackedGraphs files, see
#   scripts/pack_qm9.py; xz because the featurised train split is 415 MB raw, 28 MB compressed.
# Usage:  DATA=.carry/dev OUT=/some/dir MINUTES=7.5 bash scripts/gpu_resume_qm9.sh [--set KEY=VALUE ...]
# The run folder training_state/qm9_egnn is copied to a scratch folder and resumed there; the newest
# $KEEP checkpoints (default 1), the exported EMA weights, the config and the log land in $OUT.
# CONFIG (default configs/conformer_egnn.yaml) is the config the run resumes under.
set -euo pipefail
: "${DATA:?}" "${OUT:?}" "${MINUTES:?}"
RUN=${RUN:-/tmp/qm9_egnn_run}
CONFIG=${CONFIG:-configs/conformer_egnn.yaml}
KEEP=${KEEP:-1}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
for f in "$DATA"/*.xz; do xz -d -T0 -k -c "$f" > "/tmp/$(basename "${f%.xz}")"; done
rm -rf "$RUN" && mkdir -p "$RUN" && cp -r training_state/qm9_egnn/. "$RUN"/
save() {
  cp "$RUN"/log.jsonl "$RUN"/config.yaml "$OUT"/ 2>/dev/null || true
  [ -f "$RUN"/model.safetensors ] && cp "$RUN"/model.safetensors "$RUN"/model.json "$OUT"/ || true
  for ckpt in $(ls "$RUN"/checkpoints/step_*.safetensors 2>/dev/null | sort | tail -"$KEEP"); do
    cp "$ckpt" "${ckpt%.safetensors}.json" "$OUT"/ || true
  done
}
trap save EXIT
python3 scripts/train_for_minutes.py "$CONFIG" --out "$RUN" --minutes "$MINUTES" \
  --set data.packed_train=/tmp/qm9_train.safetensors --set data.packed_val=/tmp/qm9_valid1k.safetensors "$@"
