"""Training Keypoint R-CNN and Faster R-CNN (`--arch ...-kp`, `...-box`) on the synthetic stick figures:
losses fall, files, keypoint AP validation and best.pt, exact resume, DDP, a box-only run without
segmentations."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mrseg.engine.evaluate.evaluator import KEYPOINT_METRIC_NAMES
from mrseg.engine.train.trainer import TrainConfig, TrainError, resume_config, train
from mrseg.model.coco_classes import coco_person_classes
from mrseg.model.zoo import load_model
from tests.engine.conftest import load_example
from tests.engine.train.test_trainer import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[3]


def _generator():
    return load_example("stickfigures", "generate.py")


@pytest.fixture(scope="module")
def sticks(tmp_path_factory) -> Path:
    """4 training and 2 held-out 64x64 stick-figure images (COCO person keypoints)."""
    out = tmp_path_factory.mktemp("sticks")
    gen = _generator()
    gen.generate_split(str(out), "train", 4, 64, seed=1, max_people=2)
    gen.generate_split(str(out), "val", 2, 64, seed=1, max_people=2)
    return out


def kp_config(sticks: Path, out: Path, **kw) -> TrainConfig:
    """test_trainer's tiny config as r18-fpn-kp: 64 px, a 32-channel FPN (64-wide keypoint head), few RoIs."""
    return tiny_config(sticks, out, **{"arch": "r18-fpn-kp", "channels": 32, **kw})


def _records(run: Path, kind: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def test_keypoint_loss_falls(sticks, tmp_path):
    """Two images, one batch, no flip: ten steps lower the keypoint loss (cross-entropy over 56 x 56 cells,
    ln 3136 = 8.05 at the start) and the total."""
    two = json.loads((sticks / "train.json").read_text())
    keep = {im["id"] for im in two["images"][:2]}
    two["images"] = [im for im in two["images"] if im["id"] in keep]
    two["annotations"] = [a for a in two["annotations"] if a["image_id"] in keep]
    (tmp_path / "two.json").write_text(json.dumps(two))
    cfg = kp_config(
        sticks, tmp_path / "run", coco=str(tmp_path / "two.json"), iters=10, lr=0.05, warmup_iters=0,
        flip=0.0, schedule="cosine",
    )  # fmt: skip
    train(cfg)
    losses = _records(tmp_path / "run", "train")
    assert [r["iter"] for r in losses] == list(range(1, 11))
    first, last = losses[:3], losses[-3:]
    for key in ("loss_keypoint", "loss"):
        before = sum(r[key] for r in first) / 3
        after = sum(r[key] for r in last) / 3
        assert after < before - 0.5, (key, before, after)
    assert abs(losses[0]["loss_keypoint"] - torch.log(torch.tensor(56.0 * 56)).item()) < 0.5
    assert "loss_mask" not in losses[0]


def test_keypoint_run_validates_keypoint_ap_resumes_exactly_and_loads(sticks, tmp_path):
    val = dict(val_coco=str(sticks / "val.json"), val_images=str(sticks / "val"), eval_every=4)
    straight = train(kp_config(sticks, tmp_path / "straight", **val))
    evals = _records(tmp_path / "straight", "eval")
    assert len(evals) == 1 and set(evals[0]) >= {"bbox", "keypoints"} and "segm" not in evals[0]
    assert set(evals[0]["keypoints"]) == set(KEYPOINT_METRIC_NAMES)  # pycocotools' 10 OKS figures
    assert straight.best_ap == evals[0]["keypoints"]["AP"]  # best.pt follows the keypoint AP
    for name in ("last.pt", "best.pt", "metrics.jsonl", "config.json"):
        assert (tmp_path / "straight" / name).is_file(), name

    def interrupt_at_2(iteration: int) -> None:
        if iteration == 2:
            os.kill(os.getpid(), signal.SIGINT)

    stopped = train(kp_config(sticks, tmp_path / "split", **val), on_step=interrupt_at_2)
    assert stopped.interrupted and stopped.iteration == 2
    resumed = train(resume_config(tmp_path / "split" / "last.pt"))
    assert resumed.iteration == 4 and resumed.best_ap == straight.best_ap
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert a["heads"] == ["keypoint"] and a["num_keypoints"] == 17 and a["arch"] == "r18-fpn-kp"
    assert a["classes"] == [
        {k: v for k, v in coco_person_classes()[0].items() if k != "supercategory"}
    ]  # the dataset's category, with its keypoint names and skeleton

    model, info = load_model(tmp_path / "straight" / "best.pt")  # what predict / export read
    assert info.heads == ("keypoint",) and info.classes[0]["keypoints"][1] == "left_eye"
    image = torch.rand(3, 64, 64)
    with torch.no_grad():
        (out,) = model([image])
    assert out["keypoints"].shape[1:] == (17, 3) and "masks" not in out


def test_box_only_trains_without_segmentations(sticks, tmp_path):
    data = json.loads((sticks / "train.json").read_text())
    for ann in data["annotations"]:
        del ann["segmentation"], ann["keypoints"], ann["num_keypoints"]
    for cat in data["categories"]:
        del cat["keypoints"], cat["skeleton"]
    (tmp_path / "boxes.json").write_text(json.dumps(data))
    cfg = kp_config(
        sticks, tmp_path / "run", arch="r18-fpn-box", coco=str(tmp_path / "boxes.json"), iters=2,
        val_coco=str(tmp_path / "boxes.json"), val_images=str(sticks / "train"), eval_every=2,
    )  # fmt: skip
    result = train(cfg)
    (losses,) = _records(tmp_path / "run", "train")[-1:]
    assert not {"loss_mask", "loss_keypoint"} & set(losses) and losses["loss_classifier"] > 0
    (evaluation,) = _records(tmp_path / "run", "eval")
    assert set(evaluation) - {"time"} == {"type", "iter", "bbox"}  # box AP only
    assert result.best_ap == evaluation["bbox"]["AP"]
    ckpt = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert ckpt["heads"] == [] and ckpt["arch"] == "r18-fpn-box"
    # a mask arch on the same file: the missing segmentations are reported, nothing is left to train on
    with pytest.raises(ValueError, match="none of its annotations has a segmentation.*-box"):
        train(kp_config(sticks, tmp_path / "mask", arch="r18-fpn", coco=str(tmp_path / "boxes.json")))
    with pytest.raises(ValueError, match="no category lists 'keypoints'"):
        train(kp_config(sticks, tmp_path / "kp", coco=str(tmp_path / "boxes.json")))
    with pytest.raises(TrainError, match="--arch 'r18-fpn-pose'"):
        train(kp_config(sticks, tmp_path / "x", arch="r18-fpn-pose"))


def test_torchrun_two_cpu_processes_keypoints(sticks, tmp_path):
    """DDP (gloo) over 2 processes, 1 image each: an image without people gives a rank no positive RoI, and
    the keypoint head still takes part in every step."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "mrseg", "train", "--coco", str(sticks / "train.json"), "--images", str(sticks / "train"),
        "--arch", "r18-fpn-kp", "--weights", "none", "--iters", "2", "--batch", "2", "--lr", "0.01",
        "--min-size", "64", "--max-size", "64", "--workers", "0", "--roi-batch", "16",
        "--rpn-proposals", "50", "--channels", "32", "--log-every", "1", "--device", "cpu",
        "--out", str(tmp_path / "ddp"), "--quiet",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)
    assert ckpt["iteration"] == 2 and len(ckpt["rng_per_rank"]) == 2 and ckpt["heads"] == ["keypoint"]
    assert [r["iter"] for r in _records(tmp_path / "ddp", "train")] == [1, 2]


def test_keypoint_run_starts_from_a_mask_checkpoint(sticks, tmp_path, capfd):
    """`--arch r18-fpn-kp --weights <mask checkpoint>`: backbone, FPN, RPN and box head come from the file,
    the keypoint head starts untrained, and the run says so (it was refused before)."""
    from mrseg.model.checkpoint_format import make_checkpoint
    from mrseg.model.zoo import build_model

    torch.manual_seed(3)
    source = build_model("r18-fpn", 3, norm="bn", channels=32, min_size=64, max_size=64)
    path = tmp_path / "mask.pt"
    classes = [{"id": i, "name": f"class {i}"} for i in (1, 2, 3)]
    torch.save(make_checkpoint(source, arch="r18-fpn", classes=classes, min_size=64, max_size=64, norm="bn",
                               channels=32), path)  # fmt: skip
    run = tmp_path / "run"
    train(kp_config(sticks, run, weights=str(path), iters=1, quiet=False, lr=0.0, warmup_iters=1))
    err = capfd.readouterr().err
    assert "have no keypoint_head: " in err and "tensors start untrained" in err and "mask_head" not in err
    assert "re-initialised 4 class-specific tensors for 1 classes" in err  # 3 classes in the file, 1 here
    trained = load_model(run / "last.pt")[0].state_dict()
    # lr 0: the loaded parts are the file's, tensor for tensor (BatchNorm statistics move in training)
    for key, value in source.state_dict().items():
        if key.startswith(("backbone.fpn.", "rpn.", "roi_heads.box_head.")) and "running" not in key and (
            "num_batches" not in key
        ):
            assert torch.equal(trained[key], value), key
