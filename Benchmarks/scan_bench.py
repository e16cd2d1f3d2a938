"""`weightmark scan` at scale (run by `make scale-bench`; release build, warm page cache).

Prints:
  1. stage 1 (walk + sniff) on >= 20,000 small files holding no model: files per second, warm (median of 3);
  2. the 2B bf16 synth model marked with the key (made once with `weightmark embed` into WORK/scan-marked-2b):
     flagged at family-wise alpha 1e-6 over 10^6 models x 10 keys, and the bytes read;
  3. the unmarked 2B model with the same 10 keys: cleared, and the bytes read;
  4. one key against ten keys: wall-clock ratio on the marked and the unmarked model (median of 3 each).

Usage: scan_bench.py --weightmark BIN --model SYNTH_DIR --key K --work WORK [--files 20000] [--repeat 3]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


LAST_CPU = [0.0]


def run(cmd, expect=(0, 1)):
    """Wall-clock seconds, stdout, exit status; the child's CPU seconds (user + system) go to LAST_CPU."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True)
    dt = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    LAST_CPU[0] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if r.returncode not in expect:
        sys.exit(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stderr.decode()}")
    return dt, r.stdout.decode(), r.returncode


def records(stdout):
    lines = [json.loads(l) for l in stdout.splitlines() if l.strip()]
    assert lines and lines[-1]["type"] == "trailer", "no trailer"
    return [l for l in lines if l["type"] == "model"], lines[-1]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--weightmark", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--files", type=int, default=20000)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    wm = a.weightmark
    os.makedirs(a.work, exist_ok=True)

    # 1. Stage 1 on small non-model files (text, JSON, random bytes), 200 per folder.
    junk = os.path.join(a.work, f"scan-junk-{a.files}")
    if not os.path.isdir(junk):
        tmp = junk + ".tmp"
        for i in range(a.files):
            d = os.path.join(tmp, f"d{i // 200:04d}")
            if i % 200 == 0:
                os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, f"f{i:06d}" + (".json", ".txt", ".bin")[i % 3]), "wb") as f:
                f.write((b'{"a": %d}\n' % i) if i % 3 == 0 else (b"line %d\n" % i) * 20 if i % 3 == 1 else os.urandom(700))
        os.rename(tmp, junk)
    base = [wm, "scan", "--key", a.key, "--quiet"]
    run(base + [junk])  # warm the directory and inode caches
    times = []
    for _ in range(a.repeat):
        dt, out, _ = run(base + [junk], expect=(0,))
        recs, trailer = records(out)
        assert not recs and trailer["nonModelFiles"] == a.files, (len(recs), trailer["nonModelFiles"])
        times.append(dt)
    t1 = statistics.median(times)
    print(f"stage 1: {a.files} non-model files in {t1:.3f} s (median of {a.repeat}, whole process) = {a.files / t1:,.0f} files/s "
          f"(target >= 20,000): {'met' if a.files / t1 >= 20000 else 'NOT met'}")

    # 2-4. The 2B model, marked once with the key.
    marked = os.path.join(a.work, "scan-marked-2b")
    if not os.path.isdir(marked):
        run([wm, "embed", a.model, "--key", a.key, "--out", marked, "--no-release", "--quiet"], expect=(0,))
    keys = [a.key]
    kdir = os.path.join(a.work, "scan-keys")
    os.makedirs(kdir, exist_ok=True)
    for i in range(9):
        k = os.path.join(kdir, f"other-{i}.key")
        if not os.path.exists(k):
            run([wm, "keygen", "--out", k], expect=(0,))
        keys.append(k)
    family = ["--family-models", "1000000", "--alpha", "1e-6"]

    def scan(model, nkeys):
        args = [wm, "scan", model, *family, "--quiet"]
        for k in keys[:nkeys]:
            args += ["--key", k]
        dt, out, rc = run(args)
        recs, trailer = records(out)
        assert len(recs) == 1, recs
        return dt, recs[0], trailer, rc

    for model in (marked, a.model):
        scan(model, 10)  # warm the page cache
    results = {}
    for name, model in (("marked", marked), ("unmarked", a.model)):
        t = {1: [], 10: []}
        cpu = {1: [], 10: []}
        for _ in range(a.repeat):
            for n in (1, 10):
                dt, rec, trailer, rc = scan(model, n)
                t[n].append(dt)
                cpu[n].append(LAST_CPU[0])
                results[(name, n)] = (rec, trailer, rc)
        rec, trailer, rc = results[(name, 10)]
        frac = rec["bytesRead"] / rec["bytes"]
        hit = rec["hits"]
        hit_text = ", ".join("%s Z=%.2f (%s, %s) fw-p=%.1e" % (h["keyId"], h["z"], h["format"], h["stage"], h["familywiseP"]) for h in hit)
        zs = ", ".join(f"{s['format']}/{s['stage']} {s['z']:.2f}" for s in rec["scores"] if s["keyId"] == rec["scores"][0]["keyId"])
        print(f"{name} 2B, 10 keys, family-wise alpha {trailer['threshold']['alpha']:g} over {trailer['threshold']['models']:,} models x "
              f"{trailer['threshold']['keys']} keys x <= {trailer['threshold']['testsPerKey']} tests (Z >= {trailer['threshold']['zThreshold']:.2f}): "
              f"{('HIT ' + hit_text) if hit else 'no hit'}; "
              f"first key's scores: {zs}; read {rec['bytesRead'] / 1e9:.3f} of {rec['bytes'] / 1e9:.3f} GB = {100 * frac:.1f}% (target <= 30%: {'met' if frac <= 0.30 else 'NOT met'}); "
              f"{rec['sampledMatrices']} of {rec['candidateMatrices']} matrices sampled")
        expected_hit = name == "marked"
        print(f"  {'flagged' if hit else 'cleared'} as expected: {'yes' if bool(hit) == expected_hit else 'NO'}")
        m1, m10 = statistics.median(t[1]), statistics.median(t[10])
        c1, c10 = statistics.median(cpu[1]), statistics.median(cpu[10])
        print(f"  time (median of {a.repeat}, warm, whole process): 1 key {m1:.2f} s, 10 keys {m10:.2f} s, ratio {m10 / m1:.2f} "
              f"(target <= 2: {'met' if m10 / m1 <= 2 else 'NOT met'}); CPU (user + system) 1 key {c1:.2f} s, 10 keys {c10:.2f} s, "
              f"ratio {c10 / c1:.2f}")


if __name__ == "__main__":
    main()
