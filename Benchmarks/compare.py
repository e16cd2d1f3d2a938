#!/usr/bin/env python3
"""Side-by-side speed and memory: WeightMark vs the numpy + safetensors peer (numpy_peer.py), on the same
model, with the machine's limits measured in the same run.

  python3 Benchmarks/compare.py --weightmark .build/release/weightmark --model DIR --key KEY --work DIR

Prints wall time, ratios and peak memory (RSS, and RSS excluding file pages = RssAnon) for: warm sequential
read of the model files, cp + sync of the model, sgemm GFLOP/s (numpy's BLAS), detect and embed by both tools.
Run `make scale-bench` to generate the 2B-parameter bf16 model and run this.
"""
import argparse, json, os, shutil, subprocess, sys, time
import numpy as np

def run(cmd, env=None):
    """Runs cmd; returns (seconds, peak VmRSS MB, peak RssAnon MB, stdout)."""
    start = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    peak_rss = peak_anon = 0
    status = f"/proc/{p.pid}/status"
    while p.poll() is None:
        try:
            fields = dict(l.split(":", 1) for l in open(status) if ":" in l)
            peak_rss = max(peak_rss, int(fields.get("VmRSS", "0 kB").split()[0]))
            peak_anon = max(peak_anon, int(fields.get("RssAnon", "0 kB").split()[0]))
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
        time.sleep(0.01)
    out, err = p.communicate()
    seconds = time.perf_counter() - start
    if p.returncode not in (0, 1):
        sys.exit(f"{cmd[0]} failed ({p.returncode}): {err.decode()[-2000:]}")
    return seconds, peak_rss / 1024, peak_anon / 1024, out.decode()

def files(model):
    return [os.path.join(model, f) for f in sorted(os.listdir(model)) if f.endswith(".safetensors")]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weightmark", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--python", default=sys.executable)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    peer = os.path.join(os.path.dirname(os.path.abspath(__file__)), "numpy_peer.py")
    size = sum(os.path.getsize(f) for f in files(a.model))
    gb = size / 1e9
    rows = []

    # Machine limits, same run.
    subprocess.run(["cat"] + files(a.model), stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    t, _, _, _ = run(["sh", "-c", "cat " + " ".join(files(a.model)) + " > /dev/null"])
    rows.append(("warm sequential read (cat)", t, None, None))
    read_s = t
    x = np.random.rand(2048, 2048).astype(np.float32)
    x @ x
    t0 = time.perf_counter(); [x @ x for _ in range(5)]; gflops = 2 * 2048 ** 3 * 5 / (time.perf_counter() - t0) / 1e9
    copy_dir = os.path.join(a.work, "copy")
    shutil.rmtree(copy_dir, ignore_errors=True)
    t, _, _, _ = run(["sh", "-c", f"cp -r {a.model} {copy_dir} && sync"])
    shutil.rmtree(copy_dir, ignore_errors=True)
    rows.append(("cp -r + sync", t, None, None))
    copy_s = t

    # Detect (warm page cache), both tools.
    t_wm, rss_wm, anon_wm, out = run([a.weightmark, "detect", a.model, "--key", a.key, "--json", "-q"])
    z_wm = json.loads(out)["combinedZ"]
    rows.append(("weightmark detect", t_wm, rss_wm, anon_wm))
    t_np, rss_np, anon_np, out = run([a.python, peer, "detect", a.model, a.key])
    z_np = json.loads(out)["combinedZ"]
    rows.append(("numpy peer detect", t_np, rss_np, anon_np))

    # Embed, both tools, same delta.
    out_wm = os.path.join(a.work, "wm-marked")
    shutil.rmtree(out_wm, ignore_errors=True)
    manifest = os.path.join(a.work, "wm-marked.json")
    t_ewm, rss_ewm, anon_ewm, _ = run([a.weightmark, "embed", a.model, "--key", a.key, "--out", out_wm, "--manifest", manifest, "--force", "-q"])
    delta = json.load(open(manifest))["delta"]
    rows.append(("weightmark embed", t_ewm, rss_ewm, anon_ewm))
    out_np = os.path.join(a.work, "np-marked")
    t_enp, rss_enp, anon_enp, _ = run([a.python, peer, "embed", a.model, a.key, out_np, str(delta)])
    rows.append(("numpy peer embed", t_enp, rss_enp, anon_enp))
    _, _, _, out = run([a.weightmark, "detect", out_np, "--key", a.key, "--json", "-q"])
    z_cross = json.loads(out)["combinedZ"]
    shutil.rmtree(out_np, ignore_errors=True); shutil.rmtree(out_wm, ignore_errors=True)

    print(f"model: {a.model} ({gb:.2f} GB of safetensors), {os.cpu_count()} cores, numpy sgemm 2048^3: {gflops:.0f} GFLOP/s")
    print(f"{'step':32} {'seconds':>8} {'GB/s':>6} {'peak RSS MB':>12} {'RSS w/o file pages MB':>22}")
    for name, t, rss, anon in rows:
        print(f"{name:32} {t:8.2f} {gb / t:6.2f} {'' if rss is None else f'{rss:12.0f}'} {'' if anon is None else f'{anon:22.0f}'}")
    print()
    print(f"detect: {gb / t_wm:.2f} GB/s; {t_wm / read_s:.2f}x the warm sequential read; {t_np / t_wm:.2f}x faster than numpy")
    print(f"embed:  {t_ewm / copy_s:.2f}x the time of cp + sync; {t_enp / t_ewm:.2f}x faster than numpy")
    print(f"blind Z of the unmarked model: weightmark {z_wm:.4f}, numpy peer {z_np:.4f} (same algorithm, same carriers)")
    print(f"numpy-peer-marked model detected by weightmark: Z = {z_cross:.2f}")

if __name__ == "__main__":
    main()
