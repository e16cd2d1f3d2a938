"""Runs `weightmark scan` shards as tasks of a real Dask LocalCluster, then `weightmark combine` (test oracle).

Each task runs one shard in its own process (`--shard i/N`) and returns its JSON lines; the client writes them
to OUT/shard-i.jsonl and merges with `weightmark combine ... --report OUT/merged.json`.

Usage: dask_scan.py --weightmark BIN --shards N --out DIR -- SCAN_ARGS...
"""
import argparse
import os
import subprocess
import sys

from dask.distributed import Client, LocalCluster


def run_shard(weightmark, args, index, count):
    r = subprocess.run([weightmark, "scan", *args, "--shard", f"{index}/{count}"], capture_output=True)
    if r.returncode not in (0, 1, 2, 3):
        raise RuntimeError(f"shard {index}/{count} exited {r.returncode}: {r.stderr.decode()}")
    return index, r.stdout


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--weightmark", required=True)
    p.add_argument("--shards", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("scan", nargs=argparse.REMAINDER)
    a = p.parse_args()
    scan = a.scan[1:] if a.scan and a.scan[0] == "--" else a.scan
    os.makedirs(a.out, exist_ok=True)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
        futures = [client.submit(run_shard, a.weightmark, scan, i, a.shards, pure=False) for i in range(a.shards)]
        files = []
        for index, stdout in client.gather(futures):
            path = os.path.join(a.out, f"shard-{index}.jsonl")
            with open(path, "wb") as f:
                f.write(stdout)
            files.append(path)
    merged = os.path.join(a.out, "merged.json")
    r = subprocess.run([a.weightmark, "combine", *files, "--report", merged, "--markdown", os.path.join(a.out, "merged.md"), "--force"],
                       capture_output=True)
    print(f"combine exit {r.returncode}")
    sys.stdout.write(r.stderr.decode())


if __name__ == "__main__":
    main()
