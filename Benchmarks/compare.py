#!/usr/bin/env python3
"""Side-by-side speed and memory: WeightMark vs the numpy + safetensors peer (numpy_peer.py), on the same
model, with the machine's limits measured in the same run.

  python3 Benchmarks/compare.py --weightmark .build/release/weightmark --model DIR --key KEY --work DIR

Prints wall time, ratios and peak memory (RSS, and RSS excluding file pages = RssAnon) for: warm sequential
read of the model files, cp + sync of the model, sgemm GFLOP/s (numpy's BLAS), detect and embed by both tools.
Run `make scale-bench` to generate the 2B-parameter bf16 model and run this.
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time
import numpy as np

def run(cmd, env=None):
    """Runs cmd; returns (seconds, peak VmRSS MB, peak RssAnon MB, stdout)."""
    # Output goes to temporary files, not pipes: a report larger than the pipe buffer would block the child
    # while this loop only polls it.
    out_file, err_file = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    start = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=out_file, stderr=err_file, env=env)
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
    p.wait()
    seconds = time.perf_counter() - start
    out_file.seek(0); err_file.seek(0)
    out, err = out_file.read(), err_file.read()
    if p.returncode not in (0, 1):
        sys.exit(f"{cmd[0]} failed ({p.returncode}): {err.decode()[-2000:]}")
    return seconds, peak_rss / 1024, peak_anon / 1024, out.decode()

def files(model):
    return [os.path.join(model, f) for f in sorted(os.listdir(model)) if f.endswith(".safetensors")]

def write_renamed(src, dst):
    """A copy of the safetensors folder `src` with every tensor renamed (prefix, dots to underscores), data unchanged."""
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst)
    rename = lambda n: "leaked." + n.replace(".", "_")
    for f in sorted(os.listdir(src)):
        path = os.path.join(src, f)
        if f.endswith(".safetensors"):
            with open(path, "rb") as i, open(os.path.join(dst, f), "wb") as o:
                n = int.from_bytes(i.read(8), "little")
                header = json.loads(i.read(n))
                new = {(k if k == "__metadata__" else rename(k)): v for k, v in header.items()}
                text = json.dumps(new, separators=(",", ":")).encode()
                text += b" " * (-len(text) % 8)
                o.write(len(text).to_bytes(8, "little")); o.write(text)
                shutil.copyfileobj(i, o, 64 << 20)
        elif f == "model.safetensors.index.json":
            index = json.load(open(path))
            index["weight_map"] = {rename(k): v for k, v in index["weight_map"].items()}
            json.dump(index, open(os.path.join(dst, f), "w"))
        elif os.path.isfile(path):
            shutil.copy(path, dst)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weightmark", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--repeat", type=int, default=3, help="rounds of every measurement (medians and ranges are reported)")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    peer = os.path.join(os.path.dirname(os.path.abspath(__file__)), "numpy_peer.py")
    size = sum(os.path.getsize(f) for f in files(a.model))
    gb = size / 1e9
    ap_repeat = max(1, a.repeat)
    steps = {}          # step name -> list of (seconds, rss, anon), one per round
    ratios = {k: [] for k in ("detect_gbs", "detect_vs_read", "detect_vs_numpy", "embed_vs_copy", "embed_vs_numpy", "v2_embed_vs_v1", "v2_detect_vs_v1", "renamed_vs_named",
                              "hashed_embed_vs_copy")}
    subprocess.run(["cat"] + files(a.model), stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    x = np.random.rand(2048, 2048).astype(np.float32)
    x @ x
    t0 = time.perf_counter(); [x @ x for _ in range(5)]; gflops = 2 * 2048 ** 3 * 5 / (time.perf_counter() - t0) / 1e9

    def record(name, result):
        steps.setdefault(name, []).append(result)
        return result

    # Rounds interleave every step, so each ratio compares measurements taken minutes apart at most.
    for round_ in range(ap_repeat):
        # Machine limits.
        read_s = record("warm sequential read (cat)", (run(["sh", "-c", "cat " + " ".join(files(a.model)) + " > /dev/null"])[0], None, None))[0]
        copy_dir = os.path.join(a.work, "copy")
        shutil.rmtree(copy_dir, ignore_errors=True)
        subprocess.run(["sync"], check=True)
        copy_s = record("cp -r + sync", (run(["sh", "-c", f"cp -r {a.model} {copy_dir} && sync"])[0], None, None))[0]
        shutil.rmtree(copy_dir, ignore_errors=True)
        subprocess.run(["cat"] + files(a.model), stdout=subprocess.DEVNULL, check=True)  # the model stays warm

        # Detect (warm page cache), both tools, the same algorithm: format v1 (numpy_peer implements v1).
        t_wm, rss, anon, out = run([a.weightmark, "detect", a.model, "--key", a.key, "--json", "-q", "--format", "v1"])
        record("weightmark detect", (t_wm, rss, anon))
        z_wm = json.loads(out)["combinedZ"]
        t_np, rss, anon, out = run([a.python, peer, "detect", a.model, a.key])
        record("numpy peer detect", (t_np, rss, anon))
        z_np = json.loads(out)["combinedZ"]

        # Embed, both tools, same delta; output on the same disk as the copy.
        out_wm = os.path.join(a.work, "wm-marked")
        shutil.rmtree(out_wm, ignore_errors=True)
        subprocess.run(["sync"], check=True)
        manifest = os.path.join(a.work, "wm-marked.json")
        t_ewm, rss, anon, _ = run([a.weightmark, "embed", a.model, "--key", a.key, "--out", out_wm, "--manifest", manifest, "--force", "-q",
                                   "--format", "v1", "--no-release"])
        record("weightmark embed", (t_ewm, rss, anon))
        delta = json.load(open(manifest))["delta"]
        # The same with the manifest's optional input hashes (SHA-256 of 4 more GB), for the record.
        shutil.rmtree(out_wm, ignore_errors=True)
        subprocess.run(["sync"], check=True)
        t_ewh, rss, anon, _ = run([a.weightmark, "embed", a.model, "--key", a.key, "--out", out_wm, "--manifest", manifest,
                                   "--force", "-q", "--hash-input", "--format", "v1", "--no-release"])
        record("weightmark embed --hash-input", (t_ewh, rss, anon))
        out_np = os.path.join(a.work, "np-marked")
        shutil.rmtree(out_np, ignore_errors=True)
        subprocess.run(["sync"], check=True)
        t_enp, rss, anon, _ = run([a.python, peer, "embed", a.model, a.key, out_np, str(delta)])
        record("numpy peer embed", (t_enp, rss, anon))
        if round_ == 0:
            _, _, _, out = run([a.weightmark, "detect", out_np, "--key", a.key, "--json", "-q", "--format", "v1"])
            z_cross = json.loads(out)["combinedZ"]
        shutil.rmtree(out_np, ignore_errors=True); shutil.rmtree(out_wm, ignore_errors=True)

        # Format v2 (the default): embed, then detect the marked copy as it is, renamed, and with both formats searched.
        out_v2 = os.path.join(a.work, "wm-marked-v2")
        shutil.rmtree(out_v2, ignore_errors=True)
        subprocess.run(["sync"], check=True)
        t_e2, rss, anon, _ = run([a.weightmark, "embed", a.model, "--key", a.key, "--out", out_v2, "--manifest", manifest, "--force", "-q", "--no-release"])
        record("weightmark embed (v2)", (t_e2, rss, anon))
        renamed = os.path.join(a.work, "wm-marked-v2-renamed")
        if not os.path.isdir(renamed) or round_ == 0:
            write_renamed(out_v2, renamed)
        subprocess.run(["cat"] + files(out_v2) + files(renamed), stdout=subprocess.DEVNULL, check=True)
        t_d1, rss, anon, _ = run([a.weightmark, "detect", out_v2, "--key", a.key, "--json", "-q", "--format", "v1"])
        record("weightmark detect v1 of the v2 copy", (t_d1, rss, anon))
        t_d2, rss, anon, out = run([a.weightmark, "detect", out_v2, "--key", a.key, "--json", "-q", "--format", "v2"])
        record("weightmark detect (v2)", (t_d2, rss, anon))
        z_v2 = json.loads(out)["combinedZ"]
        t_dr, rss, anon, out = run([a.weightmark, "detect", renamed, "--key", a.key, "--json", "-q", "--format", "v2"])
        record("weightmark detect (v2, renamed copy)", (t_dr, rss, anon))
        z_v2r = json.loads(out)["combinedZ"]
        t_da, rss, anon, _ = run([a.weightmark, "detect", out_v2, "--key", a.key, "--json", "-q"])
        record("weightmark detect (auto: v1 + v2)", (t_da, rss, anon))
        shutil.rmtree(out_v2, ignore_errors=True)
        ratios["v2_embed_vs_v1"].append(t_e2 / t_ewm)
        ratios["v2_detect_vs_v1"].append(t_d2 / t_d1)
        ratios["renamed_vs_named"].append(t_dr / t_d2)

        ratios["detect_gbs"].append(gb / t_wm)
        ratios["detect_vs_read"].append(t_wm / read_s)
        ratios["detect_vs_numpy"].append(t_np / t_wm)
        ratios["embed_vs_copy"].append(t_ewm / copy_s)
        ratios["embed_vs_numpy"].append(t_enp / t_ewm)
        ratios["hashed_embed_vs_copy"].append(t_ewh / copy_s)
        print(f"round {round_ + 1}/{ap_repeat}: detect {t_wm:.2f} s (cat {read_s:.2f} s), embed {t_ewm:.2f} s (cp+sync {copy_s:.2f} s)",
              file=sys.stderr, flush=True)

    def med(v):
        return statistics.median(v)

    def spread(v, fmt):
        return f"{fmt.format(med(v))} (range {fmt.format(min(v))}-{fmt.format(max(v))})" if len(v) > 1 else fmt.format(v[0])

    print(f"model: {a.model} ({gb:.2f} GB of safetensors), {os.cpu_count()} cores, numpy sgemm 2048^3: {gflops:.0f} GFLOP/s")
    print(f"{ap_repeat} rounds; medians (each step's range across rounds in brackets)")
    print(f"{'step':32} {'seconds':>8} {'range':>13} {'GB/s':>6} {'peak RSS MB':>12} {'RSS w/o file pages MB':>22}")
    for name, results in steps.items():
        t = [r[0] for r in results]
        rss = [r[1] for r in results if r[1] is not None]
        anon = [r[2] for r in results if r[2] is not None]
        print(f"{name:32} {med(t):8.2f} {f'[{min(t):.2f}-{max(t):.2f}]':>13} {gb / med(t):6.2f} "
              f"{f'{max(rss):12.0f}' if rss else ' ' * 12} {f'{max(anon):22.0f}' if anon else ''}")
    print()
    print(f"detect: {spread(ratios['detect_gbs'], '{:.2f}')} GB/s; {spread(ratios['detect_vs_read'], '{:.2f}')}x the warm sequential read; "
          f"{spread(ratios['detect_vs_numpy'], '{:.2f}')}x faster than numpy")
    print(f"embed:  {spread(ratios['embed_vs_copy'], '{:.2f}')}x the time of cp + sync; {spread(ratios['embed_vs_numpy'], '{:.2f}')}x faster than numpy")
    print(f"embed --hash-input (manifest also hashes the inputs): {spread(ratios['hashed_embed_vs_copy'], '{:.2f}')}x the time of cp + sync")
    print("(ratios are per round, each from measurements of the same round)")
    print(f"blind Z of the unmarked model: weightmark {z_wm:.4f}, numpy peer {z_np:.4f} (same algorithm, same carriers)")
    print(f"numpy-peer-marked model detected by weightmark: Z = {z_cross:.2f}")
    print(f"format v2: embed {spread(ratios['v2_embed_vs_v1'], '{:.2f}')}x v1's time; detect {spread(ratios['v2_detect_vs_v1'], '{:.2f}')}x v1's; "
          f"renamed copy {spread(ratios['renamed_vs_named'], '{:.2f}')}x the named one; blind Z {z_v2:.2f} named, {z_v2r:.2f} renamed")

if __name__ == "__main__":
    main()
