"""Predict speed: mrseg's Mask R-CNN against torchvision's `maskrcnn_resnet50_fpn` with identical weights, in
one process and one run, on the same real photographs (scikit-image's, resized to each of `--sizes`, by
default 640x480 and 1280x720; the models resize them to 1066x800 and 1333x749: short side 800, long side
at most 1333).

Weights: torchvision's R50-FPN with seeded random weights whose frozen BatchNorm statistics are calibrated on
the benchmark photos (each layer's mean / variance of its input, so activations are scaled like a trained
network's; `--raw-norms` keeps tests/model's random statistics instead), class biases raised so that ~100
detections pass the 0.05 score threshold (as tests/model does); ours gets them through our key converter.

    python benchmarks/predict.py                       # model: per-stage times, images/s, parity, peak RSS
    python benchmarks/predict.py --mode cli            # `mrseg predict DIR` vs a plain torchvision loop
    python benchmarks/predict.py --arch r18-fpn r34-fpn --no-rss   # light models, ours alone
    python benchmarks/predict.py --device cuda --precision bf16 --batch 8 --photos 6 --copies 20 --no-rss
    python benchmarks/predict.py --mode cli --device cuda --precision fp16 --batch 8 --workers 4 --copies 20
    bash benchmarks/gpu_session.sh                     # everything issue 7 asks, on a GPU machine

Model mode. Stage pass: each batch of `--batch` images (default 1) through both models, interleaved (ours /
torchvision alternate who goes first), after a warm-up, with the median per batch of each stage: preprocess
(uint8 -> float, resize, normalise, batch), backbone, RPN, RoI heads, paste (postprocess and mask paste to
full-size or box-sized binary masks), other (between stages, results to the host), writing (masks -> COCO RLE
+ JSON), plus images/s from the summed totals and the ratio ours / torchvision (> 1: ours is faster). On a
GPU the stage timer synchronises at every stage boundary, which deflates images/s; the throughput pass (on
by default with CUDA, `--throughput on` forces it on the CPU) runs each model alone over all images with no
stage timing and one synchronisation at the end (model -> detections on the host, no writing), sampling
`nvidia-smi` (utilisation mean / p50 / max, memory) and reading torch's peak allocated memory per model.
Ours runs as `mrseg predict` runs it: through `Predictor` (BatchNorm folded, channels_last, inference_mode),
at `--precision` (fp32, or autocast fp16 / bf16 through `Predictor(precision=...)`); torchvision runs in fp32,
as a plain torchvision user would, unless `--tv-precision` says otherwise.

Parity, fp32 against fp32: same number of detections, labels in the same order, boxes within 1e-2 px, scores
within 1e-4, mask IoU >= 0.99 (a pair of detections whose scores differ by less than 1e-4 may come out
swapped; the check pairs them and counts such swaps). With autocast (either side not fp32) the reference is
torchvision's fp32 detections and the criteria are issue 7's: every reference detection matched by one of ours
with the same label and box IoU >= 0.9, mask IoU >= 0.98 for matched pairs, and box AP unchanged: COCO box AP
(pycocotools) of ours with the reference taken as ground truth, ~1.0 (>= 0.99). Parity covers each distinct
photo once (the first of its `--copies`). Peak RSS: each model alone in a child process predicting 1066x800
photos.

CLI mode writes the photos as JPEGs (`--copies` of each) into a temporary folder and the weights into a
state-dict file, then runs, each as its own process and alternately, `python -m mrseg predict DIR --weights W
--arch r50-fpn --format coco --mask-format rle --score 0 [--batch N] [--precision P] --workers W` and a
straightforward torchvision loop (batch 1, fp32, torchvision.io decode, model, pycocotools RLE,
annotations.json); wall time includes start-up and model loading for both; nvidia-smi is sampled during each.
The two annotations.json files are compared with the same tolerances (boxes are rounded to 0.01 px in both
files), or with the autocast criteria when `--precision` is not fp32.
"""
from __future__ import annotations

import argparse
import functools
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from gpu_watch import GpuSampler  # benchmarks/ is on sys.path when this file runs as a script
from predict_cli import cli_mode, torchvision_loop
from predict_parity import (
    AutocastParity,
    Parity,
    mask_iou,
)
from predict_setup import (
    PHOTOS,
    PRECISIONS,
    SIZES,
    as_float,
    autocast,
    host_tensors,
    model_input_size,
    our_model,
    our_predictor,
    parse_sizes,
    photos,
    sync,
    torchvision_host,
    torchvision_model,
    torchvision_r50_fpn,
    torchvision_records,
)
from torch import nn

STAGES = ("preprocess", "backbone", "rpn", "roi_heads", "paste", "other", "write")


# ------------------------------------------------------------------------------------------ stage timer


class StageTimer:
    """Times the stages of one model call with hooks on its backbone / rpn / roi_heads modules and wrappers
    around its paste-back functions (`paste_owners`: (object, attribute name) pairs, timed together as
    "paste"); `cuda` synchronises at each boundary. `enabled = False` turns every hook into a no-op."""

    def __init__(self, model: nn.Module, paste_owners: list[tuple[object, str]], cuda: bool):
        self.cuda = cuda
        self.enabled = True
        self.marks: dict[str, float] = {}
        self.paste = 0.0
        self._depth = 0
        for name in ("backbone", "rpn", "roi_heads"):
            module = getattr(model, name)
            module.register_forward_pre_hook(lambda m, a, n=name: self._mark(n + "_start"))
            module.register_forward_hook(lambda m, a, o, n=name: self._mark(n + "_end"))
        for owner, attribute in paste_owners:
            setattr(owner, attribute, self._timed(getattr(owner, attribute)))

    def _timed(self, original: Callable) -> Callable:
        def timed(*args, **kwargs):
            if not self.enabled or self._depth:  # nested paste calls count once
                return original(*args, **kwargs)
            self._depth += 1
            start = self.now()
            try:
                return original(*args, **kwargs)
            finally:
                self.paste += self.now() - start
                self._depth -= 1

        return timed

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def _mark(self, key: str) -> None:
        if self.enabled:
            self.marks[key] = self.now()

    def start(self) -> None:
        self.marks, self.paste = {}, 0.0
        self.marks["start"] = self.now()

    def stop(self, write_seconds: float, end: float) -> dict[str, float]:
        m = self.marks
        t = {
            "preprocess": m["backbone_start"] - m["start"],
            "backbone": m["backbone_end"] - m["backbone_start"],
            "rpn": m["rpn_end"] - m["rpn_start"],
            "roi_heads": m["roi_heads_end"] - m["roi_heads_start"],
            "paste": self.paste,
        }
        t["other"] = (end - m["start"]) - sum(t.values())  # between stages, results to the host
        t["write"] = write_seconds
        t["total"] = end - m["start"] + write_seconds
        return t


def our_paste_owners(predictor) -> list[tuple[object, str]]:
    """Where ours pastes masks: the model's postprocess and, when the Predictor pastes box crops itself after
    the model, the predictor module's crop paste."""
    import mrseg.engine.predictor as predictor_module

    owners: list[tuple[object, str]] = [(predictor.net, "postprocess")]
    if hasattr(predictor_module, "_cropped_masks"):
        owners.append((predictor_module, "_cropped_masks"))
    return owners


# ------------------------------------------------------------------------------------------ model mode


def run_ours(predictor, timer: StageTimer, batch: list[tuple[str, torch.Tensor]], classes):
    """One batch through ours, timed by stage: (Detections per image, stage times)."""
    from mrseg.outputs.records import instance_records

    timer.start()
    dets = predictor.infer([t for _, t in batch])
    end = timer.now()
    start = time.perf_counter()
    for det in dets:
        json.dumps(instance_records(det, classes, mask_format="rle"))
    return dets, timer.stop(time.perf_counter() - start, end)


def torchvision_forward(model, tensors: list[torch.Tensor], device: torch.device, precision: str):
    with torch.inference_mode(), autocast(device, precision):
        return model([as_float(t, device) for t in tensors])


def run_torchvision(model, timer: StageTimer, batch, device: torch.device, precision: str):
    """One batch through torchvision's model, results to the host as a user does, timed by stage:
    (outputs on the device, the same on the host, stage times)."""
    timer.start()
    outs = torchvision_forward(model, [t for _, t in batch], device, precision)
    hosts = [torchvision_host(o) for o in outs]
    end = timer.now()
    start = time.perf_counter()
    for host in hosts:
        json.dumps(torchvision_records(host, 0))
    return outs, hosts, timer.stop(time.perf_counter() - start, end)


def print_table(columns: dict[str, list[dict]], count: int, batch: int) -> dict[str, float]:
    """Median ms per batch of each stage; returns images/s (incl. writing) per column."""
    names = list(columns)
    header = f"{f'stage (median ms/batch of {batch})':<30}" + "".join(f"{n:>14}" for n in names)
    if len(names) == 2:
        header += f"{'ratio':>10}"
    print(header)
    for stage in (*STAGES, "total"):
        meds = [1000 * statistics.median(t[stage] for t in columns[n]) for n in names]
        row = f"{stage:<30}" + "".join(f"{m:>14.1f}" for m in meds)
        if len(names) == 2:
            row += f"{meds[1] / meds[0]:>10.2f}" if meds[0] > 0.05 else f"{'-':>10}"
        print(row)
    rates = {n: count / sum(t["total"] for t in columns[n]) for n in names}
    no_write = {n: count / sum(t["total"] - t["write"] for t in columns[n]) for n in names}
    for label, r in (("images/s", rates), ("images/s without write", no_write)):
        print(
            f"{label:<30}"
            + "".join(f"{r[n]:>14.3f}" for n in names)
            + (f"{r[names[0]] / r[names[1]]:>10.2f}" if len(names) == 2 else "")
        )
    return rates


def throughput_pass(run_batch: Callable, batches: list, device: torch.device, sampler: GpuSampler):
    """All `batches` through `run_batch` with one synchronisation at the end, nvidia-smi sampled:
    (seconds, torch peak allocated MiB over the pass, allocated MiB before it) (MiB: None off CUDA)."""
    cuda = device.type == "cuda"
    sync(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device) / 2**20
    with sampler:
        start = time.perf_counter()
        for b in batches:
            run_batch(b)
        sync(device)
        seconds = time.perf_counter() - start
    if cuda:
        return seconds, torch.cuda.max_memory_allocated(device) / 2**20, before
    return seconds, None, None


def model_mode(args) -> dict[str, dict[str, dict]]:
    """Prints the tables; returns {arch: {'mrseg': state dict, ['torchvision': state dict]}} for peak_rss."""
    from mrseg.model.coco_classes import coco_label_classes

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    distinct = photos(args.photos, args.sizes)
    images = host_tensors(distinct * args.copies, device)
    batch_size = args.batch or 1
    batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
    # the stage pass: every distinct photo at least once (parity), all images unless --stage-limit says less
    stage_images = max(args.stage_limit or len(images), len(distinct))
    stage_batches = batches[: -(-stage_images // batch_size)]
    stage_count = sum(len(b) for b in stage_batches)
    calib = None if args.raw_norms else [as_float(rgb, torch.device("cpu")) for _, rgb in distinct]
    classes = coco_label_classes()
    throughput = args.throughput == "on" or (args.throughput == "auto" and cuda)
    autocast_parity = args.precision != "fp32" or args.tv_precision != "fp32"
    sizes = ", ".join(f"{w}x{h} -> {'x'.join(map(str, model_input_size(w, h)))}" for w, h in args.sizes)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}"
        f"{f' ({torch.cuda.get_device_name(device)})' if cuda else ''}; ours {args.precision}, "
        f"torchvision {args.tv_precision}; {len(images)} images ({args.photos} photos x {len(args.sizes)} "
        f"sizes x {args.copies} copies; model input {sizes}), batch {batch_size}, {args.repeats} pass(es) "
        f"after a warm-up; the stage pass takes the first {stage_count} images"
    )
    states = {}
    for arch in args.arch:
        print(f"\n== {arch} ==")
        with_tv = arch == "r50-fpn"
        tv = None
        if with_tv:
            tv = torchvision_model(calib, device=device)
            ours = our_model(tv.state_dict(), arch)
        else:
            ours = our_model(None, arch, calibrate_on=calib)
        predictor = our_predictor(ours, classes, device, args.precision, fuse=not args.no_fuse)
        our_timer = StageTimer(predictor.net, our_paste_owners(predictor), cuda)
        runs: dict[str, list[dict]] = {"mrseg": []}
        if with_tv:
            tv_timer = StageTimer(tv, [(tv.transform, "postprocess")], cuda)
            runs["torchvision"] = []
        for b in batches[: 2 if cuda else 1]:  # warm-up (on a GPU: both image sizes, allocator, kernels)
            run_ours(predictor, our_timer, b, classes)
            if with_tv:
                run_torchvision(tv, tv_timer, b, device, args.tv_precision)
        parity, autoparity, tv_autoparity = Parity(), AutocastParity(), AutocastParity()
        detections = []
        tv_outs = None
        for r in range(args.repeats):
            for k, b in enumerate(stage_batches):
                order = ("mrseg", "torchvision") if k % 2 == 0 else ("torchvision", "mrseg")
                for who in order:
                    if who == "mrseg":
                        dets, t = run_ours(predictor, our_timer, b, classes)
                        runs["mrseg"].append(t)
                        detections.extend(len(d) for d in dets)
                    elif with_tv:
                        tv_outs, tv_hosts, t = run_torchvision(tv, tv_timer, b, device, args.tv_precision)
                        runs["torchvision"].append(t)
                first = k * batch_size
                if with_tv and r == 0 and first < len(distinct):  # each distinct photo once
                    n = min(len(b), len(distinct) - first)
                    if autocast_parity:
                        refs = tv_hosts
                        if args.tv_precision != "fp32":
                            fp32 = torchvision_forward(tv, [t for _, t in b], device, "fp32")
                            refs = [torchvision_host(o) for o in fp32]
                            for ref, host in zip(refs[:n], tv_hosts[:n], strict=True):
                                add_autocast_pair(tv_autoparity, ref, SimpleNamespace(**host))
                        for ref, det in zip(refs[:n], dets[:n], strict=True):
                            add_autocast_pair(autoparity, ref, det)
                    for (name, _), out, det in zip(b[:n], tv_outs[:n], dets[:n], strict=True):
                        parity.add(name, out, out["masks"][:, 0].float().cpu().numpy(), det)
                tv_outs = None  # frees the device's pasted masks
        print(f"detections per image: {min(detections)}..{max(detections)}")
        states[arch] = {"mrseg": ours.state_dict()}
        if with_tv:
            states[arch]["torchvision"] = tv.state_dict()
        rates = print_table(runs, stage_count * args.repeats, batch_size)
        if with_tv:
            if autocast_parity:
                print(f"ours {args.precision}: {autoparity.line()}")
                if args.tv_precision != "fp32":
                    print(f"torchvision {args.tv_precision} (how much autocast moves this model): ", end="")
                    print(tv_autoparity.line())
                print(f"(strict fp32 criteria, for information: {parity.line()})")
            else:
                print(parity.line())
        through = {}
        if throughput:
            our_timer.enabled = False
            jobs = {"mrseg": functools.partial(_ours_batch, predictor)}
            if with_tv:
                tv_timer.enabled = False
                jobs["torchvision"] = functools.partial(
                    _torchvision_batch, tv, device=device, precision=args.tv_precision
                )
            samplers = {who: GpuSampler(device) for who in jobs}
            seconds = dict.fromkeys(jobs, 0.0)
            memory: dict[str, tuple] = {}
            for r in range(args.repeats):
                for who in jobs if r % 2 == 0 else reversed(list(jobs)):
                    s, peak, before = throughput_pass(jobs[who], batches, device, samplers[who])
                    seconds[who] += s
                    if peak is not None:
                        memory[who] = (max(peak, memory.get(who, (0.0, 0.0))[0]), before)
            print(
                f"throughput pass (each model alone, batch {batch_size}, no stage timing, one sync at the "
                "end; model -> detections on the host, no writing):"
            )
            for who in jobs:
                through[who] = len(images) * args.repeats / seconds[who]
                mem = (
                    f"; torch peak allocated {memory[who][0]:.0f} MiB ({memory[who][1]:.0f} MiB before the "
                    "pass: both models' weights)"
                    if who in memory
                    else ""
                )
                print(f"  {who:<12} {through[who]:9.3f} images/s   {samplers[who].summary()}{mem}")
            for who in jobs if args.profile else ():
                profile_batch(f"{who} ({args.precision if who == 'mrseg' else args.tv_precision})", jobs[who],
                              batches[0], device, args.profile)  # fmt: skip
            our_timer.enabled = True
            if with_tv:
                tv_timer.enabled = True
        if with_tv:
            label = f"{arch} ours {args.precision} torchvision {args.tv_precision} batch {batch_size}"
            stage_ratio = rates["mrseg"] / rates["torchvision"]
            if through:
                print(
                    f"RESULT {label}: mrseg {through['mrseg'] / through['torchvision']:.2f}x torchvision's "
                    f"images/s (throughput pass; stage pass incl. write {stage_ratio:.2f}x)"
                )
            else:
                print(f"RESULT {label}: mrseg {stage_ratio:.2f}x torchvision's images/s (stage pass)")
        elif through:
            print(f"RESULT {arch} ours {args.precision} batch {batch_size}: {through['mrseg']:.2f} images/s")
        del predictor, ours, tv
        if cuda:
            torch.cuda.empty_cache()
    return states


SYNC_EVENTS = (
    "cudaStreamSynchronize",
    "cudaDeviceSynchronize",
    "cudaEventSynchronize",
    "aten::_local_scalar_dense",  # .item() / bool(tensor)
)


def profile_batch(label: str, run_batch: Callable, batch, device: torch.device, rows: int) -> None:
    """torch.profiler over one batch: the top `rows` ops by self device (GPU) or CPU time, and the host
    synchronisations counted (where the host waits for the GPU: .item(), .cpu(), explicit syncs)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        run_batch(batch)
        sync(device)
    averages = prof.key_averages()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    print(f"\nprofile of one batch of {len(batch)}, {label} (top {rows} by {key}):")
    print(averages.table(sort_by=key, row_limit=rows))
    counts = {e.key: e.count for e in averages if e.key in SYNC_EVENTS}
    found = ", ".join(f"{k} x{v}" for k, v in counts.items()) or "none"
    print(f"host syncs in that batch, {label}: {found}")


def _ours_batch(predictor, batch):
    return predictor.infer([t for _, t in batch])


def _torchvision_batch(model, batch, device: torch.device, precision: str):
    return [torchvision_host(o) for o in torchvision_forward(model, [t for _, t in batch], device, precision)]


def add_autocast_pair(parity: AutocastParity, ref: dict, det) -> None:
    """One image: torchvision's fp32 host arrays `ref` against our Detections `det`."""
    parity.add(
        ref["boxes"],
        ref["scores"],
        ref["labels"],
        det.boxes,
        det.scores,
        det.labels,
        lambda i, j: mask_iou(np.asarray(det.masks[j]), ref["masks"][i]),
    )


# -------------------------------------------------------------------------------------------- peak RSS


def rss_child(which: str, weights: str, arch: str, device: str) -> None:
    """Child process: one model alone, loaded from a weights file as `mrseg predict` / a torchvision user
    would, predicting 1066x800 photos (~100 detections each) to RLE records; prints its peak RSS."""
    from mrseg.engine.predictor import Predictor
    from mrseg.outputs.records import instance_records

    dev = torch.device(device)
    images = photos(2, sizes=((1066, 800),))
    if which == "torchvision":
        model = torchvision_r50_fpn()
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        model.to(dev)
        for _, rgb in images:
            with torch.inference_mode():
                (out,) = model([as_float(rgb, dev)])
            json.dumps(torchvision_records(torchvision_host(out), 0))
    else:
        predictor = Predictor(weights=weights, arch=arch, device=dev, score=0.0, mask_crops=True)
        for _, rgb in images:
            (det,) = predictor.infer([torch.from_numpy(rgb)])
            json.dumps(instance_records(det, predictor.classes, mask_format="rle"))
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM (ru_maxrss would carry the forking parent's over the exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss(which: str, arch: str, state: dict, device: str) -> float:
    with tempfile.TemporaryDirectory(prefix="mrseg-bench-") as tmp:
        weights = Path(tmp) / "weights.pth"
        torch.save(state, weights)
        cmd = [sys.executable, __file__, "--child-rss", which, str(weights)]
        cmd += ["--arch", arch, "--device", device]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_rss_mb"]


# ---------------------------------------------------------------------------------------------------- main


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=("model", "cli"), default="model")
    parser.add_argument(
        "--arch", nargs="+", default=["r50-fpn"], help="r50-fpn: against torchvision; others ours alone"
    )
    parser.add_argument(
        "--photos", type=int, default=2, help=f"photographs, 1..{len(PHOTOS)} (each at every --sizes)"
    )
    parser.add_argument(
        "--sizes", type=parse_sizes, default=SIZES, help="WxH comma list (default 640x480,1280x720)"
    )
    parser.add_argument("--copies", type=int, default=1, help="each photo repeated this many times")
    parser.add_argument("--repeats", type=int, default=1, help="passes over the images (cli: runs of each)")
    parser.add_argument(
        "--stage-limit", type=int, default=None, help="model mode: images in the stage pass (default: all)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32", help="ours (autocast)")
    parser.add_argument(
        "--tv-precision", choices=tuple(PRECISIONS), default="fp32", help="torchvision (model mode only)"
    )
    parser.add_argument(
        "--batch", type=int, default=None, help="images per model call (model: 1; cli: mrseg's default)"
    )
    parser.add_argument(
        "--throughput",
        choices=("auto", "on", "off"),
        default="auto",
        help="model mode: the pass without stage timing (auto: on CUDA only)",
    )
    parser.add_argument("--workers", type=int, default=1, help="cli mode: mrseg predict --workers")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="ROWS",
        help="model mode, after the throughput pass: torch.profiler's top ROWS ops of one batch per model",
    )
    parser.add_argument(
        "--tf32",
        choices=("default", "off"),
        default="default",
        help="CUDA: off disables TF32 in convs and matmuls (by default torch lets cuDNN use it in convs)",
    )
    parser.add_argument("--no-fuse", action="store_true", help="ours without BN folding / channels_last")
    parser.add_argument("--raw-norms", action="store_true", help="tests/model's random BN statistics")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS child processes")
    parser.add_argument("--child-rss", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--child-tv-loop", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 1 <= args.photos <= len(PHOTOS):
        parser.error(f"--photos must be 1..{len(PHOTOS)}, got {args.photos}")
    for name in ("copies", "repeats", "batch", "stage_limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here")
    if args.tf32 == "off":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    if args.child_rss:
        return rss_child(*args.child_rss, args.arch[0], args.device)
    if args.child_tv_loop:
        return torchvision_loop(*args.child_tv_loop, args.out, args.device)
    if args.mode == "cli":
        if args.tv_precision != "fp32":
            parser.error("--tv-precision: the cli baseline is the plain torchvision loop, fp32")
        return cli_mode(args)
    states = model_mode(args)
    if not args.no_rss:
        print("\npeak RSS, one model alone (child process) loading its weights file and predicting two")
        print("1066x800 photos (~100 detections each) to RLE records:")
        for arch, by_model in states.items():
            for which, state in by_model.items():
                print(f"  {which:<12} {arch:<9} {peak_rss(which, arch, state, args.device):8.0f} MB")


if __name__ == "__main__":
    main()
