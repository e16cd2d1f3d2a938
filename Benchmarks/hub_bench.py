#!/usr/bin/env python3
"""Detect through a hub re-upload vs through GGUF Q4_0 of the same marked model, side by side in one run (warm cache).

  python3 Benchmarks/hub_bench.py --weightmark .build/release/weightmark --model DIR --key KEY --work DIR --python PY

Marks --model with the key (embed's defaults), writes the marked copy as GGUF Q4_0 with `weightmark convert` and as an
MLX 4-bit folder (group 64) with mlx_lm.convert (Tests/Oracles/hub_quant.py mlx), then times `detect` (blind, owner key)
through each, alternating, and reports the medians, the ratio MLX / GGUF (the [hub-formats] target: ≤ 1.3×) and each
copy's Z. The conversions are cached in --work.
"""
import argparse, json, os, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd):
    """Wall seconds of cmd and its stdout (stderr kept for the error message)."""
    start = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd[:3])} failed ({p.returncode}): {p.stderr.decode()[-2000:]}")
    return time.perf_counter() - start, p.stdout


def size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weightmark", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    marked = os.path.join(a.work, "hub-marked")
    gguf = os.path.join(a.work, "hub-marked-Q4_0.gguf")
    mlx = os.path.join(a.work, "hub-marked-mlx4")
    if not os.path.exists(os.path.join(marked, "config.json")):
        subprocess.run([a.weightmark, "embed", a.model, "--key", a.key, "--out", marked, "--force", "--quiet"], check=True)
    if not os.path.exists(gguf):
        subprocess.run([a.weightmark, "convert", marked, "--to", "gguf", "--type", "Q4_0", "--out", gguf, "--quiet"], check=True)
    if not os.path.exists(os.path.join(mlx, "config.json")):
        oracle = os.path.join(HERE, "..", "Tests", "Oracles", "hub_quant.py")
        subprocess.run([a.python, oracle, "mlx", marked, mlx, "4", "64"], check=True, stdout=subprocess.DEVNULL)
    for path in (gguf, mlx):  # warm the page cache
        files = [path] if os.path.isfile(path) else [os.path.join(path, f) for f in os.listdir(path)]
        subprocess.run(["cat"] + files, stdout=subprocess.DEVNULL, check=True)
    rows, z = {}, {}
    for _ in range(max(1, a.repeat)):
        for label, path in (("GGUF Q4_0", gguf), ("MLX q4 g64", mlx)):
            seconds, out = run([a.weightmark, "detect", path, "--key", a.key, "--quiet", "--json"])
            rows.setdefault(label, []).append(seconds)
            z[label] = json.loads(out)["combinedZ"]
    print(f"\nDetect through hub re-uploads of the marked {os.path.basename(os.path.normpath(a.model))}, warm cache, "
          f"median of {a.repeat} (range), owner key, blind")
    for (label, values), path in zip(rows.items(), (gguf, mlx)):
        print(f"  {label:<12} {size(path) / 1e9:6.2f} GB  {statistics.median(values):7.2f} s   "
              f"({min(values):.2f}–{max(values):.2f})   Z {z[label]:.1f}")
    ratio = statistics.median(rows["MLX q4 g64"]) / statistics.median(rows["GGUF Q4_0"])
    print(f"  detect MLX q4 / GGUF Q4_0: {ratio:.3f}× (target ≤ 1.3×)")


if __name__ == "__main__":
    main()
