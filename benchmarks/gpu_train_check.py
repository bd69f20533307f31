"""AMP training on a GPU, checked: `mrseg train` for N iterations with --amp, then --resume for M more.

Reads the run's metrics.jsonl and prints one RESULT line per criterion: every logged loss finite, the mean of
the last logged losses below the first, last.pt written, the resumed run continuing at the saved iteration.

    python benchmarks/gpu_train_check.py --device cuda --iters 20 --more 10
    python benchmarks/gpu_train_check.py --device cpu --iters 4 --more 2 --size 64   # dry run
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(cmd: list[str]) -> float:
    print("+", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def logged(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if "loss" in r]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--more", type=int, default=10, help="iterations added by the resumed run")
    p.add_argument("--size", type=int, default=256, help="shapes image size")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--arch", default="r50-fpn")
    p.add_argument("--out", help="work folder (default: a temporary one)")
    a = p.parse_args(argv)
    work = Path(a.out or tempfile.mkdtemp(prefix="mrseg_gpu_train_"))
    data, run_dir = work / "data", work / "train"
    py = sys.executable
    run([py, "examples/shapes/generate.py", "--out", str(data), "--train", str(4 * a.batch), "--val", "4",
         "--size", str(a.size), "--seed", "0"])
    common = ["--device", a.device, "--amp", "--log-every", "1", "--quiet"]
    train = [py, "-m", "mrseg", "train", "--coco", str(data / "train.json"), "--images", str(data / "train"),
             "--arch", a.arch, "--weights", "none", "--iters", str(a.iters), "--batch", str(a.batch),
             "--lr", "0.01", "--warmup-iters", "2", "--min-size", str(a.size), "--max-size", str(a.size),
             "--workers", "4", "--eval-every", str(10**6), "--checkpoint-every", str(a.iters),
             "--out", str(run_dir), *common]
    first = run(train)
    rows = logged(run_dir)
    losses = [r["loss"] for r in rows]
    print(f"first run: {a.iters} iterations in {first:.1f} s (start-up included); losses {losses}")
    ok = True

    def check(name: str, cond: bool, detail: str) -> None:
        nonlocal ok
        ok &= cond
        print(f"RESULT {'PASS' if cond else 'FAIL'} {name}: {detail}")

    k = max(1, len(losses) // 4)
    check("loss finite", bool(losses) and all(math.isfinite(v) for v in losses), f"{len(losses)} logged")
    if losses:
        head, tail = sum(losses[:k]) / k, sum(losses[-k:]) / k
        check("loss falling", tail < head, f"mean of first {k} {head:.4f} -> last {k} {tail:.4f}")
    check("last.pt written", (run_dir / "last.pt").is_file(), str(run_dir / "last.pt"))
    total = a.iters + a.more
    second = run([py, "-m", "mrseg", "train", "--resume", str(run_dir / "last.pt"), "--iters", str(total),
                  "--out", str(run_dir), "--exist-ok", *common])
    rows = logged(run_dir)
    iters = [r.get("iter") for r in rows]
    resumed = [r for r in rows if (r.get("iter") or 0) > a.iters]
    check("resume continues", bool(resumed) and all(math.isfinite(r["loss"]) for r in resumed),
          f"{len(resumed)} iterations after {a.iters} logged in {second:.1f} s; iters logged {iters}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
