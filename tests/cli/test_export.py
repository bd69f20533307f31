"""`mrseg export`: writes the file, prints the self-check against PyTorch, clear errors (exit 1 / 2)."""

import shutil

import cv2
import numpy as np
from click.testing import CliRunner

from mrseg.cli import main
from mrseg.export import load_exported


def run(*args):
    return CliRunner().invoke(main, ["export", *map(str, args)])


def test_onnx_with_check_table(tiny_weights, tmp_path):
    out = tmp_path / "sub" / "tiny.onnx"
    result = run("--weights", tiny_weights, "--format", "onnx", "--out", out, "--check-score", "0")
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and "input images float32 [1, 3, 96, 128]" in result.output
    assert "onnxruntime vs PyTorch" in result.output and "yes" in result.output and "NO" not in result.output
    model, info = load_exported(out)
    assert [c["name"] for c in info.classes] == ["date", "fig", "hazelnut"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny.onnx"]  # no temp files left


def test_torchscript_default_out_and_imgsz_rounding(tiny_weights, tmp_path):
    weights = tmp_path / "best.pt"
    shutil.copy(tiny_weights, weights)
    result = run("--weights", weights, "--format", "torchscript", "--imgsz", "100", "130", "--no-check")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "best.torchscript").is_file()
    assert "rounded up to 128 x 160" in result.output and "[1, 3, 128, 160]" in result.output
    assert "vs PyTorch" not in result.output  # --no-check
    # predict takes weights or .onnx: the TorchScript program is named as such, with what to give instead
    image = tmp_path / "a.png"
    image.write_bytes(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    program = tmp_path / "best.torchscript"
    result = CliRunner().invoke(
        main, ["predict", str(image), "--weights", str(program), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 1 and "is a TorchScript program" in result.output, result.output
    assert "give the .pt checkpoint it was exported from" in result.output
    assert "Traceback" not in result.output


def test_errors(tmp_path):
    result = run("--weights", tmp_path / "missing.pt", "--out", tmp_path / "x.onnx")
    assert result.exit_code == 1 and "does not exist" in result.output and "Traceback" not in result.output
    assert run("--weights", "w.pt", "--format", "tflite").exit_code == 2
    assert run("--weights", "w.pt", "--imgsz", "10", "10").exit_code == 2
    assert list(tmp_path.iterdir()) == []
