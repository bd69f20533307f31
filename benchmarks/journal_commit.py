"""What the journal's durability costs (issue 13.9): one batch of `--inputs` finished inputs, each with the
per-item files of labelme, YOLO and an overlay JPEG (written as the writers write them, atomically, no
fsync), then the batch's journal lines committed as `journal.AppendLog` does (syncfs of the output folder's
file system, write, fsync), against the alternative of an fsync per output file. ~200 inputs is what a GPU
at ~100 inputs/s finishes between two commits (2 s).

    python benchmarks/journal_commit.py --inputs 200 --repeats 5 --out /tmp/mrseg-journal-bench
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mrseg.engine.predict import journal  # noqa: E402
from mrseg.outputs.atomic import atomic_write_bytes, atomic_write_text, fsync_path  # noqa: E402


def write_outputs(out: Path, n: int, batch: int) -> list[Path]:
    rng = os.urandom
    paths = []
    for i in range(n):
        stem = f"b{batch}-{i:05d}"
        paths.append(out / "labelme" / f"{stem}.json")
        atomic_write_text(paths[-1], json.dumps({"shapes": [{"points": [[1, 2]] * 200}]}))  # ~5 kB
        paths.append(out / "yolo" / "labels" / f"{stem}.txt")
        atomic_write_text(paths[-1], "0 " + " ".join(["0.123456"] * 160) + "\n")  # ~1 kB
        paths.append(out / "overlay" / f"{stem}.jpg")
        atomic_write_bytes(paths[-1], rng(30_000))  # ~30 kB
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("/tmp/mrseg-journal-bench"))
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    (args.out / ".mrseg").mkdir(parents=True)
    log = journal.AppendLog(args.out / ".mrseg" / "records-0.jsonl", commit_every=3600)
    commit, per_file, writing = [], [], []
    for r in range(2 * args.repeats):
        t0 = time.perf_counter()
        paths = write_outputs(args.out, args.inputs, r)
        t1 = time.perf_counter()
        if r % 2 == 0:  # the journal's way: one syncfs, then the lines
            for i in range(args.inputs):
                log.append({"image": {"id": r * args.inputs + i}, "instances": []})
            log.commit()
            commit.append(time.perf_counter() - t1)
        else:  # an fsync per file (and its folder's entry, once per folder)
            for p in paths:
                fsync_path(p)
            for folder in {p.parent for p in paths}:
                fsync_path(folder)
            per_file.append(time.perf_counter() - t1)
        writing.append(t1 - t0)
    log.close()
    med = statistics.median
    print(f"{args.inputs} inputs x 3 files per batch, {args.repeats} batches each way, on {args.out}")
    print(f"writing the files (no fsync): median {med(writing) * 1e3:.1f} ms per batch")
    ms = {k: (med(v) * 1e3, max(v) * 1e3) for k, v in (("commit", commit), ("per_file", per_file))}
    print("journal commit (syncfs + lines + fsync): median {:.1f} ms, max {:.1f}".format(*ms["commit"]))
    print("an fsync per file instead: median {:.1f} ms, max {:.1f}".format(*ms["per_file"]))
    print(f"load average {os.getloadavg()[0]:.2f}")
    shutil.rmtree(args.out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
