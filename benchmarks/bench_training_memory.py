"""Benchmark of training memory: streaming from shards against loading them, at 1x and 10x the data.

UTKFace is prepared once into shards. A second prepared folder lists each
shard `--copies` times in its manifest, through symbolic links. The large run
thus reads about 200,000 prepared records from disk, with no second copy of
the images. Run from the repository root:

    python benchmarks/bench_training_memory.py --data-dir ../shared/data

Each case trains SSR-Net for one epoch with `train.train` in a fresh process
and reports its peak resident memory. The baseline is streaming one copy.
Two other cases print their ratio to it, measured in the same run:
streaming `--copies` copies, and loading one copy into memory as
`load_prepared_splits` does.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ssr_lib import prepare


def make_repeated(prepared, folder, copies):
    """Write a prepared folder whose manifest lists every shard of `prepared` `copies` times."""
    manifest = json.loads((prepared / "manifest.json").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for copy in range(copies):
        for shard in manifest["shards"]:
            name = f"copy{copy:02d}-{shard['shard']}"
            if not (folder / name).exists():
                os.symlink((prepared / shard["shard"]).resolve(), folder / name)
            shards.append({**shard, "shard": name})
    repeated = {**manifest, "kept": manifest["kept"] * copies, "shards": shards}
    (folder / "manifest.json").write_text(json.dumps(repeated))
    return folder


def train_once(folder, mode, output):
    """Train one epoch on `folder` (`mode` "stream" or "memory") and return faces, seconds and peak memory."""
    from ssr_lib import model, train

    if mode == "stream":
        splits = prepare.open_prepared_splits(folder)
    else:
        splits = prepare.load_prepared_splits(folder)
    start = time.perf_counter()
    train.train(model.build_ssrnet(), splits, output, profile="quick", epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    return {"records": sum(len(s) for s in splits.values()), "train_faces": len(splits["train"]),
            "seconds": round(seconds, 1), "train_faces_per_s": round(len(splits["train"]) / seconds, 1),
            "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def measure(folder, mode, label):
    with tempfile.TemporaryDirectory() as output:
        done = subprocess.run([sys.executable, __file__, "--child", mode, str(folder), output],
                              capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"The {label} case failed (exit status {done.returncode}):\n{done.stderr[-3000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    return {"case": label, "mode": mode, **row}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="folder that contains UTKFace/ (default: $SSR_DATA_DIR)")
    parser.add_argument("--work-dir", type=Path, help="where to keep the prepared shards (default: a temporary "
                        "folder); a finished preparation there is reused")
    parser.add_argument("--copies", type=int, default=10, help="copies of UTKFace in the large run (default: 10)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per case")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, folder, output = args.child
        print(json.dumps(train_once(Path(folder), mode, output)))
        return

    with tempfile.TemporaryDirectory() as scratch:
        work = args.work_dir or Path(scratch)
        data_dir = args.data_dir or Path(os.environ.get("SSR_DATA_DIR", "data"))
        prepared = work / "utkface"
        prepare.prepare("utkface", data_dir, prepared, verbose=False)
        repeated = make_repeated(prepared, work / f"utkface-x{args.copies}", args.copies)
        rows = [measure(prepared, "stream", "stream 1 copy"),
                measure(repeated, "stream", f"stream {args.copies} copies"),
                measure(prepared, "memory", "in memory 1 copy")]
    for row in rows:
        row["peak_ratio"] = round(row["peak_mb"] / rows[0]["peak_mb"], 2)
        row["records_ratio"] = round(row["records"] / rows[0]["records"], 2)
        if args.json:
            print(json.dumps(row))
        else:
            print(f"{row['case']:<22} {row['records']:>8,} records  peak {row['peak_mb']:>7.0f} MB "
                  f"({row['peak_ratio']:.2f}x)  {row['train_faces_per_s']:>6.0f} training faces/s")


if __name__ == "__main__":
    main()
