#!/usr/bin/env bash
# `make robustness`, fine-tuning part: marks MiniLM, fine-tunes the marked copy for real (Benchmarks/finetune/
# finetune.py: 1,000 steps at lr 5e-5, and a REFIT-style high-learning-rate run), then detects each result blind and
# informed (aligned against the original) and prints a Markdown table with the task's retrieval accuracy before/after.
# Usage: run.sh WEIGHTMARK FINETUNE_PYTHON MODEL_FOLDER KEY WORKDIR
set -euo pipefail
WM=$1 PY=$2 MODEL=$3 KEY=$4 WORK=$5
mkdir -p "$WORK"
cp "$MODEL/config.json" "$WORK/config.json"
[ -f "$WORK/marked.safetensors" ] || "$WM" embed "$MODEL/model.safetensors" --key "$KEY" --out "$WORK/marked.safetensors" --no-release --quiet
run() { # name, finetune arguments…
  local name=$1; shift
  [ -f "$WORK/$name.safetensors" ] || "$PY" "$(dirname "$0")/finetune.py" --model "$WORK/marked.safetensors" \
      --vocab "$MODEL/vocab.txt" --out "$WORK/$name.safetensors" "$@" >/dev/null
}
run ft-1000-lr5e-5 --steps 1000 --lr 5e-5 --batch 8
run ft-refit-300-lr1e-4 --steps 300 --lr 1e-4 --batch 16 --refit
echo "| fine-tune | steps, lr, batch | weight change ‖ΔW‖/‖W‖ | probe embeddings vs the marked model, min (mean) cos | retrieval accuracy before → after | blind Z | informed Z (aligned) |"
echo "|---|---|---:|---:|---|---:|---:|"
for name in ft-1000-lr5e-5 ft-refit-300-lr1e-4; do
  blind=$("$WM" detect "$WORK/$name.safetensors" --key "$KEY" --json --quiet || true)
  informed=$("$WM" detect "$WORK/$name.safetensors" --key "$KEY" --reference "$MODEL" --json --quiet || true)
  # Function change: the independent numpy forward pass of Benchmarks/fidelity.py on the 12 probe sentences.
  kept=$("$PY" "$(dirname "$0")/../fidelity.py" "$WORK/marked.safetensors" "$WORK/$name.safetensors" "$MODEL/vocab.txt")
  python3 - "$WORK/$name.json" "$blind" "$informed" "$kept" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1])); b = json.loads(sys.argv[2]); i = json.loads(sys.argv[3]); k = json.loads(sys.argv[4])
kind = "REFIT-style (10× lr for the first 20%)" if r["schedule"].startswith("refit") else "AdamW, warmup + linear decay"
print(f"| {kind} | {r['steps']}, {r['lr']:g}, {r['batch']} | {r['relative_weight_change']:.4f} | {k['minCosine']:.3f} ({k['meanCosine']:.3f}) | "
      f"{r['retrieval_accuracy_before']:.3f} → {r['retrieval_accuracy_after']:.3f} | {b['combinedZ']:.1f} | {i['combinedZ']:.1f} |")
PYEOF
done
