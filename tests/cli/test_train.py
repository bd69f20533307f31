"""`mrseg train` and `mrseg plot` through the CLI: options, errors, outputs, resume."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
import torch
from click.testing import CliRunner

from mrseg.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    spec = importlib.util.spec_from_file_location(
        "shapes_generate", ROOT / "examples" / "shapes" / "generate.py"
    )
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    out = tmp_path_factory.mktemp("shapes")
    gen.generate_split(str(out), "train", 6, 64, seed=2, max_shapes=2, min_shape=20, max_shape=30)
    gen.generate_split(str(out), "val", 2, 64, seed=2, max_shapes=2, min_shape=20, max_shape=30)
    return out


def _tiny_args(shapes: Path, out: Path, val: bool = True, iters: int = 2, workers: int = 0) -> list[str]:
    args = ["train", "--coco", str(shapes / "train.json"), "--images", str(shapes / "train")]
    if val:
        args += ["--val-coco", str(shapes / "val.json"), "--val-images", str(shapes / "val")]
    return args + [
        "--arch", "r18-fpn", "--weights", "none", "--iters", str(iters), "--batch", "2", "--lr", "0.01",
        "--min-size", "64", "--max-size", "64", "--workers", str(workers), "--roi-batch", "16",
        "--rpn-proposals", "50", "--log-every", "1", "--device", "cpu", "--out", str(out),
    ]  # fmt: skip


def test_help_lists_the_contract_options():
    result = CliRunner().invoke(main, ["train", "--help"])
    assert result.exit_code == 0
    for option in (
        "--coco",
        "--images",
        "--val-coco",
        "--val-images",
        "--arch",
        "--weights",
        "--epochs",
        "--iters",
        "--batch",
        "--lr",
        "--amp / --no-amp",
        "--device",
        "--workers",
        "--out",
        "--resume",
        "--min-size",
        "--max-size",
        "--clip-grad",
        "--schedule",
        "--norm",
        "--anchor-sizes",
        "--channels",
    ):
        assert option in result.output, option


def test_usage_errors(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["train", "--images", str(tmp_path)])
    assert result.exit_code == 2 and "--coco and --images are required" in result.output
    result = runner.invoke(
        main, ["train", "--coco", str(tmp_path / "nope.json"), "--images", str(tmp_path), "--weights", "none"]
    )
    assert result.exit_code == 1 and "nope.json: annotation file not found" in result.output
    result = runner.invoke(main, ["train", "--coco", "a.json", "--images", ".", "--min-size", "big"])
    assert result.exit_code == 2 and "--min-size" in result.output
    result = runner.invoke(main, ["train", "--coco", "a.json", "--images", ".", "--anchor-sizes", "16,32"])
    assert result.exit_code == 2 and "5 anchor sizes" in result.output
    result = runner.invoke(main, ["train", "--coco", "a.json", "--images", ".", "--norm", "layer"])
    assert result.exit_code == 2 and "--norm" in result.output
    result = runner.invoke(main, ["train", "--resume", str(tmp_path / "missing.pt")])
    assert result.exit_code == 1 and "does not exist" in result.output


def test_train_writes_the_run_then_resume_and_plot(shapes, tmp_path):
    out = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(main, _tiny_args(shapes, out))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.json", "last.pt", "metrics.jsonl"]
    config = json.loads((out / "config.json").read_text())
    assert config["arch"] == "r18-fpn" and config["total_iters"] == 2 and config["min_size"] == [64]
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["type"] for r in records] == ["train", "train", "eval"]

    again = runner.invoke(main, _tiny_args(shapes, out))
    assert again.exit_code == 1 and "--resume" in again.output  # refuses to overwrite a run

    resumed = runner.invoke(main, ["train", "--resume", str(out / "last.pt"), "--iters", "3", "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    assert torch.load(out / "last.pt", weights_only=True)["iteration"] == 3
    iters = [json.loads(x)["iter"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert iters == [1, 2, 2, 3, 3]  # train 1, 2, eval 2, then train 3, eval 3

    plotted = runner.invoke(main, ["plot", str(out)])
    assert plotted.exit_code == 0, plotted.output
    png = cv2.imread(str(out / "results.png"))
    assert png is not None and png.shape[0] > 100 and png.shape[1] > 300


def test_plot_without_matplotlib_says_how_to_get_it(tmp_path, monkeypatch):
    (tmp_path / "metrics.jsonl").write_text('{"type": "train", "iter": 1, "loss": 1.0, "lr": 0.1}\n')
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = CliRunner().invoke(main, ["plot", str(tmp_path)])
    assert result.exit_code == 1 and "pip install 'mrseg[plot]'" in result.output
    result = CliRunner().invoke(main, ["plot", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "metrics.jsonl not found" in result.output


def test_ctrl_c_saves_last_pt_and_exits_130(shapes, tmp_path):
    """Ctrl-C reaches the whole process group (main process and data workers): the step finishes, last.pt is
    written and the exit status is 130."""
    out = tmp_path / "run"
    args = _tiny_args(shapes, out, val=False, iters=200, workers=1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mrseg", *args],
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            metrics = out / "metrics.jsonl"
            if metrics.is_file() and metrics.read_text().count("\n") >= 1:
                break
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr[-2000:]
    assert "--resume" in stderr
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert 1 <= ckpt["iteration"] < 200 and "optimizer" in ckpt
