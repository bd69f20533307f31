"""CLI mode of benchmarks/predict.py (`--mode cli`): `mrseg predict DIR` against a plain torchvision loop
(see that file's docstring for what is measured)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from gpu_watch import GpuSampler  # benchmarks/ is on sys.path when this file runs as a script
from predict_parity import (
    compare_annotation_files,
    compare_annotation_files_autocast,
)
from predict_setup import (
    as_float,
    photos,
    torchvision_host,
    torchvision_model,
    torchvision_r50_fpn,
    torchvision_records,
)

# -------------------------------------------------------------------------------------------- CLI mode


def torchvision_loop(folder: str, weights: str, out_dir: str, device: str) -> None:
    """Child process: the plain torchvision way over a folder (batch 1, fp32), to OUT/annotations.json."""
    import torchvision

    dev = torch.device(device)
    model = torchvision_r50_fpn()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval().to(dev)
    images, annotations = [], []
    for image_id, path in enumerate(sorted(Path(folder).glob("*.jpg")), start=1):
        image = torchvision.io.decode_image(str(path), mode=torchvision.io.ImageReadMode.RGB)
        with torch.inference_mode():
            (out,) = model([image.to(dev).float() / 255.0])
        images.append(
            {"id": image_id, "file_name": path.name, "height": image.shape[1], "width": image.shape[2]}
        )
        annotations.extend(torchvision_records(torchvision_host(out), image_id))
    for i, a in enumerate(annotations, start=1):
        a["id"] = i
    categories = [{"id": i, "name": str(i)} for i in range(1, 91)]
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(out_dir) / "annotations.json", "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


def write_jpegs(folder: Path, images: list[tuple[str, np.ndarray]], copies: int) -> int:
    """Each image as a quality-95 JPEG, `copies` files of each (name_000.jpg, ...); returns the file count."""
    count = 0
    for name, rgb in images:
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise RuntimeError(f"could not encode {name} as JPEG")
        for k in range(copies):
            (folder / (f"{name}.jpg" if copies == 1 else f"{name}_{k:03d}.jpg")).write_bytes(data.tobytes())
            count += 1
    return count


def cli_mode(args) -> None:
    device = args.device
    images = photos(args.photos, args.sizes)
    calib = [as_float(rgb, torch.device("cpu")) for _, rgb in images]
    with tempfile.TemporaryDirectory(prefix="mrseg-bench-") as tmp:
        tmp = Path(tmp)
        folder = tmp / "images"
        folder.mkdir()
        count = write_jpegs(folder, images, args.copies)
        weights = tmp / "weights.pth"
        tv = torchvision_model(None if args.raw_norms else calib, device=device)
        torch.save({k: v.cpu() for k, v in tv.state_dict().items()}, weights)
        del tv
        ours_cmd = [
            sys.executable, "-m", "mrseg", "predict", str(folder), "--weights", str(weights),
            "--arch", "r50-fpn",
            "--format", "coco", "--mask-format", "rle", "--score", "0", "--device", device, "--quiet",
            "--exist-ok", "--workers", str(args.workers),
        ]  # fmt: skip
        if args.batch:
            ours_cmd += ["--batch", str(args.batch)]
        if args.precision != "fp32":
            ours_cmd += ["--precision", args.precision]
        ours_cmd.append("--out")
        main_script = str(Path(__file__).with_name("predict.py"))  # --child-tv-loop: `torchvision_loop`
        tv_cmd = [sys.executable, main_script, "--child-tv-loop", str(folder), str(weights), "--device"]
        tv_cmd.append(device)
        tv_cmd.append("--out")
        times: dict[str, list[float]] = {"mrseg predict": [], "torchvision loop": []}
        samplers = {who: GpuSampler(torch.device(device)) for who in times}
        print(
            f"{count} JPEGs ({args.photos} photos x {', '.join(f'{w}x{h}' for w, h in args.sizes)} x "
            f"{args.copies} copies), device {device}; mrseg predict --workers {args.workers} --batch "
            f"{args.batch or 'default'} --precision {args.precision}; torchvision loop batch 1 fp32; "
            f"{args.repeats} alternating run(s) each, wall time incl. start-up"
        )
        for r in range(args.repeats):
            order = (
                ("mrseg predict", "torchvision loop") if r % 2 == 0 else ("torchvision loop", "mrseg predict")
            )
            for who in order:
                cmd = (
                    (ours_cmd + [str(tmp / "ours")])
                    if who == "mrseg predict"
                    else (tv_cmd + [str(tmp / "tv")])
                )
                with samplers[who]:
                    start = time.perf_counter()
                    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
                    times[who].append(time.perf_counter() - start)
        for who, ts in times.items():
            med = statistics.median(ts)
            print(
                f"{who:<18} {med:8.1f} s  {count / med:7.3f} images/s  "
                f"(runs: {', '.join(f'{t:.1f}' for t in ts)})  {samplers[who].summary()}"
            )
        ratio = statistics.median(times["torchvision loop"]) / statistics.median(times["mrseg predict"])
        ours_file, tv_file = tmp / "ours" / "annotations.json", tmp / "tv" / "annotations.json"
        strict = compare_annotation_files(ours_file, tv_file)
        if args.precision == "fp32":
            print(strict.line())
        else:
            print(compare_annotation_files_autocast(ours_file, tv_file).line())
            print(f"(strict fp32 criteria, for information: {strict.line()})")
        print(
            f"RESULT cli ours {args.precision} batch {args.batch or 'default'} workers {args.workers}: "
            f"mrseg predict {ratio:.2f}x the torchvision loop's images/s"
        )


