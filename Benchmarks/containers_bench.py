#!/usr/bin/env python3
"""PyTorch checkpoints vs safetensors, side by side in one run (warm page cache).

  python3 Benchmarks/containers_bench.py --weightmark .build/release/weightmark --model DIR --key KEY --work DIR

Takes the largest .safetensors file of --model, writes the same tensors in torch.save's zip layout
(scripts/oracles/torch_layout.py), then reports:
  - inspect of the .bin: wall time (reads the central directory and data.pkl only), and of the safetensors file;
  - detect (blind) through the .bin and through the safetensors file, alternating, with the ratio.
Medians over --repeat rounds, with ranges.
"""
import argparse, os, statistics, subprocess, sys, time


def run(cmd):
    """Wall seconds of cmd (output discarded, so a large report cannot fill a pipe and stall the child)."""
    start = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if p.returncode not in (0, 1):
        sys.exit(f"{cmd[0]} failed ({p.returncode}): {p.stderr.decode()[-2000:]}")
    return time.perf_counter() - start


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
    shards = [os.path.join(a.model, f) for f in os.listdir(a.model) if f.endswith(".safetensors")] if os.path.isdir(a.model) else [a.model]
    st = max(shards, key=os.path.getsize)
    bin_path = os.path.join(a.work, os.path.basename(st).replace(".safetensors", ".bin"))
    writer = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts", "oracles", "torch_layout.py")
    if not os.path.exists(bin_path) or os.path.getmtime(bin_path) < os.path.getmtime(st):
        subprocess.run([a.python, writer, "from-safetensors", st, bin_path], check=True)
    gb = os.path.getsize(st) / 1e9
    subprocess.run(["cat", st, bin_path], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    rows = {}
    for _ in range(max(1, a.repeat)):
        for label, path in (("safetensors", st), ("pytorch", bin_path)):
            rows.setdefault(f"inspect {label}", []).append(run([a.weightmark, "inspect", path, "--json"]))
        for label, path in (("safetensors", st), ("pytorch", bin_path)):
            rows.setdefault(f"detect {label}", []).append(run([a.weightmark, "detect", path, "--key", a.key, "--quiet", "--json"]))
    print(f"\nPyTorch zip checkpoint vs safetensors, same {gb:.2f} GB of tensors ({os.path.basename(st)}), warm cache, "
          f"median of {a.repeat} (range)")
    for name, values in rows.items():
        print(f"  {name:<22} {statistics.median(values) * 1000:9.1f} ms   ({min(values) * 1000:.1f}–{max(values) * 1000:.1f})")
    ratio = statistics.median(rows["detect pytorch"]) / statistics.median(rows["detect safetensors"])
    print(f"  detect pytorch / safetensors: {ratio:.3f}×")


if __name__ == "__main__":
    main()
