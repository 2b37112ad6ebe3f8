"""Benchmark of dataset preparation: throughput with 1 and 2 workers, peak memory.

UTKFace is repeated (through symbolic links with new names) until it has
`--records` records, so the run measures a dataset of IMDB's order of size
without copying any image. Run from the repository root:

    python benchmarks/bench_prepare.py --data-dir ../shared/data

Throughput is printed as images per second and as the ratio of 2 workers to
1 worker, both measured in this run. Peak memory is the largest resident set
of the main process and of any one worker while preparing all records.
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

from ssr_lib import data, prepare


def make_repeated_utkface(utkface, folder, records):
    """Fill `folder/UTKFace` with links to UTKFace's valid files, renamed, until it has `records` of them."""
    names = [n for n in sorted(os.listdir(utkface))
             if data.UTKFACE_PATTERN.match(n) and int(n.split("_")[0]) <= data.MAX_AGE]
    target = folder / "UTKFace"
    target.mkdir(parents=True)
    for i in range(records):
        name = names[i % len(names)]
        age, gender, race, rest = name.split("_", 3)
        os.symlink(utkface / name, target / f"{age}_{gender}_{race}_{i // len(names)}{rest}")
    return folder


def throughput(source, workers, method, records):
    with tempfile.TemporaryDirectory() as output:
        start = time.perf_counter()
        manifest, _ = prepare.prepare("utkface", source, output, method=method, workers=workers,
                                      shard_size=max(records // 8, 50), limit=records, verbose=False)
        seconds = time.perf_counter() - start
    return {"workers": workers, "method": method, "records": manifest["kept"], "seconds": round(seconds, 2),
            "images_per_s": round(manifest["kept"] / seconds, 1)}


MEMORY_SCRIPT = """
import json, resource, sys
from ssr_lib import prepare
manifest, _ = prepare.prepare("utkface", sys.argv[1], sys.argv[2], workers=2, verbose=False)
print(json.dumps({"kept": manifest["kept"],
                  "main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def peak_memory(source):
    """Prepare every record in a fresh process and read its and its workers' peak resident memory."""
    with tempfile.TemporaryDirectory() as output:
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(source), output],
                                capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - start
    row = json.loads(result.stdout.strip().splitlines()[-1])
    row["bound_mb"] = row["main_mb"] + 2 * row["worker_mb"]
    row["seconds"] = round(seconds, 1)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="folder that contains UTKFace/")
    parser.add_argument("--records", type=int, default=100_000, help="records for the memory run")
    parser.add_argument("--sample", type=int, default=20_000, help="records for each resize throughput run")
    parser.add_argument("--align-sample", type=int, default=800, help="records for each align run (0 skips)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per row")
    args = parser.parse_args()

    utkface = data.find_utkface(args.data_dir).resolve()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        source = make_repeated_utkface(utkface, Path(folder), max(args.records, args.sample))
        for method, records in (("resize", args.sample), ("align", args.align_sample)):
            if records:
                one_worker, two_workers = (throughput(source, workers, method, records) for workers in (1, 2))
                two_workers["ratio_to_1_worker"] = round(two_workers["images_per_s"] / one_worker["images_per_s"], 2)
                rows += [one_worker, two_workers]
        memory = peak_memory(source)
        memory["records"] = args.records
        rows.append(memory)
    for row in rows:
        if args.json:
            print(json.dumps(row))
        elif "images_per_s" in row:
            ratio = f", {row['ratio_to_1_worker']}x of 1 worker" if "ratio_to_1_worker" in row else ""
            print(f"{row['method']:>6}, {row['workers']} worker(s): {row['images_per_s']:8.1f} images/s "
                  f"({row['records']:,} images in {row['seconds']} s{ratio})")
        else:
            print(f"peak memory preparing {row['kept']:,} records in {row['seconds']} s: "
                  f"main {row['main_mb']:.0f} MB, largest worker {row['worker_mb']:.0f} MB, "
                  f"main + 2 workers at most {row['bound_mb']:.0f} MB")
    print(f"(ru_maxrss of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
