"""`mrseg predict` end to end: every format written and read back, bad inputs (exit 3), usage and fatal
errors, stdin -> stdout streaming, Ctrl-C and kill -9 then --resume, and a 2-process torchrun with the same
result as one process. Real photos shrunk to 200x150, the tiny seeded model of tests/engine/conftest.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner
from pycocotools.coco import COCO

from mrseg.cli import main


def _shrink(nuts_images, folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for p in nuts_images[:n]:
        target = folder / p.name
        cv2.imwrite(str(target), cv2.resize(cv2.imread(str(p)), (200, 150)))
        out.append(target)
    return out


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/engine/conftest.py


def _run(*args):
    result = CliRunner().invoke(main, ["predict", *map(str, args)], catch_exceptions=False)
    return result


def _coco_without_date(path: Path) -> dict:
    data = json.loads(path.read_text())
    data.pop("info", None)
    return data


def test_every_format_is_written_and_reads_back_and_bad_files_exit_3(tiny_weights, nuts_images, tmp_path):
    photos = tmp_path / "photos"
    good = _shrink(nuts_images, photos, 2)
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "notes.jpg").write_text("not an image")
    data = good[0].read_bytes()
    (photos / "truncated.jpg").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    result = _run(
        photos,
        "--weights",
        tiny_weights,
        "--out",
        out,
        "--score",
        "0.2",
        "--workers",
        "1",
        "--format",
        "coco,coco-results,jsonl,labelme,yolo,overlay",
    )
    assert result.exit_code == 3, result.output
    assert "3 input(s) could not be read" in result.stderr and "failures.jsonl" in result.stderr

    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert sorted(Path(f["path"]).name for f in failures) == ["empty.jpg", "notes.jpg", "truncated.jpg"]
    assert all(f["reason"] for f in failures)

    coco = COCO(str(out / "annotations.json"))
    assert sorted(im["file_name"] for im in coco.dataset["images"]) == ["0.jpg", "1.jpg"]
    assert all((im["width"], im["height"]) == (200, 150) for im in coco.dataset["images"])
    anns = coco.dataset["annotations"]
    assert anns and all(a["score"] >= 0.2 and a["iscrowd"] == 0 for a in anns)
    for a in anns:  # polygons decode to a mask whose area is close to the recorded pixel count
        m = coco.annToMask(a)
        assert abs(int(m.sum()) - a["area"]) <= 0.1 * a["area"] + 50
    results = coco.loadRes(str(out / "results.json"))
    assert len(results.dataset["annotations"]) == len(anns)

    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [line["image"]["file_name"] for line in lines] == ["0.jpg", "1.jpg"]
    per_image = {line["image"]["file_name"]: len(line["instances"]) for line in lines}

    for stem in ("0", "1"):
        doc = json.loads((out / "labelme" / f"{stem}.json").read_text())
        assert (doc["imageWidth"], doc["imageHeight"]) == (200, 150)
        assert len({s.get("group_id", i) for i, s in enumerate(doc["shapes"])}) >= 1
        yolo = (out / "yolo" / "labels" / f"{stem}.txt").read_text().splitlines()
        assert len(yolo) == per_image[f"{stem}.jpg"]
        for row in yolo:
            values = [float(v) for v in row.split()[1:]]
            assert len(values) >= 6 and len(values) % 2 == 0 and all(0 <= v <= 1 for v in values)
        overlay = cv2.imread(str(out / "overlay" / f"{stem}.jpg"))
        assert overlay.shape == (150, 200, 3)
    assert "names" in (out / "yolo" / "data.yaml").read_text()

    # the truncated file is replaced by a good one: --resume tries the failed inputs again
    shutil.copy(good[0], photos / "truncated.jpg")
    again = _run(photos, "--weights", tiny_weights, "--out", out, "--score", "0.2", "--workers", "1",
                 "--format", "coco,coco-results,jsonl,labelme,yolo,overlay", "--resume")  # fmt: skip
    assert again.exit_code == 3, again.output
    assert "2 input(s) could not be read" in again.stderr
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert sorted(Path(f["path"]).name for f in failures) == ["empty.jpg", "notes.jpg"]
    coco = COCO(str(out / "annotations.json"))
    assert sorted(im["file_name"] for im in coco.dataset["images"]) == ["0.jpg", "1.jpg", "truncated.jpg"]
    assert (out / "labelme" / "truncated.json").exists() and (out / "overlay" / "truncated.jpg").exists()


def test_usage_errors_exit_2_and_fatal_errors_exit_1_without_traceback(tiny_weights, nuts_images, tmp_path):
    photos = tmp_path / "photos"
    _shrink(nuts_images, photos, 1)
    assert _run(photos, "--weights", tiny_weights, "--no-such-option").exit_code == 2
    bad_format = _run(photos, "--weights", tiny_weights, "--format", "coco,png")
    assert bad_format.exit_code == 2 and "png" in bad_format.stderr
    assert _run(photos, "--weights", tiny_weights, "--out", "-", "--format", "coco").exit_code == 2

    missing = _run(photos, "--weights", tmp_path / "nope.pt", "--out", tmp_path / "o")
    assert missing.exit_code == 1
    assert "nope.pt" in missing.stderr and "Traceback" not in missing.stderr
    no_source = _run(tmp_path / "absent", "--weights", tiny_weights, "--out", tmp_path / "o2")
    assert no_source.exit_code == 1 and "absent" in no_source.stderr
    debug = _run(tmp_path / "absent", "--weights", tiny_weights, "--out", tmp_path / "o3", "--debug")
    assert debug.exit_code == 1 and "Traceback" in debug.stderr


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_paths_on_stdin_stream_jsonl_to_stdout_and_nothing_else(tiny_weights, nuts_images, tmp_path):
    photos = _shrink(nuts_images, tmp_path / "photos", 3)
    proc = subprocess.run(
        [sys.executable, "-m", "mrseg", "predict", "-", "--weights", str(tiny_weights), "--format", "jsonl",
         "--out", "-", "--score", "0.2", "--workers", "0"],
        input="".join(f"{p}\n" for p in photos), capture_output=True, text=True, cwd=tmp_path, env=_env(),
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3
    records = [json.loads(line) for line in lines]
    assert [r["image"]["id"] for r in records] == [1, 2, 3]
    assert all(set(r) == {"image", "instances"} for r in records)
    assert not (tmp_path / "runs").exists()


def _journal_lines(out: Path) -> int:
    path = out / ".mrseg" / "records-0.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


# `mrseg predict` with each model call slowed down, so that a run is still busy when the test signals it,
# however fast the model and however loaded the machine (the signal never races the end of the run).
# Ctrl-C gets Python's usual handler back: a shell that starts the tests in the background (`.ci/run &`)
# leaves SIGINT ignored, and children inherit that.
_SLOW_PREDICT = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from mrseg.engine.predict.predictor import Predictor
infer = Predictor.infer
def slow_infer(self, images):
    time.sleep(0.25)
    return infer(self, images)
Predictor.infer = slow_infer
from mrseg.cli import main
main(sys.argv[1:], prog_name="mrseg")
"""


def _start(args, tmp_path):
    return subprocess.Popen(
        [sys.executable, "-c", _SLOW_PREDICT, "predict", *map(str, args)],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_lines(proc, out: Path, n: int, timeout: float = 240.0):
    deadline = time.monotonic() + timeout
    while _journal_lines(out) < n:
        if proc.poll() is not None:
            pytest.fail(f"the run ended before journaling {n} inputs: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the run journaled too slowly")
        time.sleep(0.05)


def test_ctrl_c_and_kill_9_then_resume_give_the_clean_result(tiny_weights, nuts_images, tmp_path):
    photos = tmp_path / "photos"
    _shrink(nuts_images, photos, 16)
    common = ["--weights", tiny_weights, "--score", "0.2", "--format", "coco,labelme", "--workers", "1"]
    clean = _run(photos, *common, "--out", tmp_path / "clean")
    assert clean.exit_code == 0, clean.output

    out = tmp_path / "out"
    first = _start([photos, *common, "--out", out], tmp_path)
    _wait_for_lines(first, out, 2)
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr
    assert "--resume" in stderr and str(out) in stderr
    assert not (out / "annotations.json").exists()
    after_ctrl_c = _journal_lines(out)
    assert after_ctrl_c < 16

    second = _start([photos, *common, "--out", out, "--resume"], tmp_path)
    _wait_for_lines(second, out, after_ctrl_c + 2)
    second.kill()  # SIGKILL: no cleanup at all
    second.wait(timeout=60)
    assert _journal_lines(out) < 16 and not (out / "annotations.json").exists()

    resumed = _run(photos, *common, "--out", out, "--resume")
    assert resumed.exit_code == 0, resumed.output
    got = _coco_without_date(out / "annotations.json")
    assert sorted(im["id"] for im in got["images"]) == list(range(1, 17))
    assert got == _coco_without_date(tmp_path / "clean" / "annotations.json")
    for doc in (out / "labelme").glob("*.json"):
        json.loads(doc.read_text())  # every per-item file complete
    assert len(list((out / "labelme").glob("*.json"))) == 16


def _torchrun(args, tmp_path):
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "mrseg", "predict", *map(str, args)],
        capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=400,
    )  # fmt: skip


def test_torchrun_two_processes_give_the_same_files_as_one_and_resume_per_shard(
    tiny_weights, nuts_images, tmp_path
):
    photos = tmp_path / "photos"
    _shrink(nuts_images, photos, 5)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff")
    common = ["--weights", tiny_weights, "--score", "0.2", "--format", "coco,jsonl", "--workers", "0"]
    single = _run(photos, *common, "--out", tmp_path / "single")
    assert single.exit_code == 3, single.output
    multi = tmp_path / "multi"
    proc = _torchrun([photos, *common, "--out", multi], tmp_path)
    # Rank 0 exits 3 (an input failed); torchrun reports any non-zero worker exit as its own exit 1.
    assert proc.returncode in (1, 3), proc.stderr[-3000:]
    assert "1 input(s) could not be read" in proc.stderr
    expected = _coco_without_date(tmp_path / "single" / "annotations.json")
    assert len(expected["images"]) == 5
    assert _coco_without_date(multi / "annotations.json") == expected
    single_jsonl = (tmp_path / "single" / "predictions.jsonl").read_text()
    assert (multi / "predictions.jsonl").read_text() == single_jsonl
    parts = sorted((multi / ".mrseg").glob("records-*.jsonl"))
    assert [p.name for p in parts] == ["records-0.jsonl", "records-1.jsonl"]
    assert all(p.read_text().count("\n") >= 2 for p in parts)  # both ranks did work
    failures = (multi / "failures.jsonl").read_text().splitlines()
    assert len(failures) == 1 and "broken.jpg" in failures[0]

    # Both shards "crash": rank 1 after its first input with a torn line, rank 0 before its last one.
    for part, keep in zip(parts, (2, 1), strict=True):
        lines = part.read_text().splitlines(keepends=True)
        part.write_text("".join(lines[:keep]) + lines[keep][:20])
    (multi / "annotations.json").unlink()
    (multi / "predictions.jsonl").unlink()
    resumed = _torchrun([photos, *common, "--out", multi, "--resume"], tmp_path)
    assert resumed.returncode in (1, 3), resumed.stderr[-3000:]
    assert _coco_without_date(multi / "annotations.json") == expected
    assert (multi / "predictions.jsonl").read_text() == single_jsonl


def test_max_pixels_classes_and_tile_options_reach_the_engine(tiny_weights, nuts_images, tmp_path):
    photos = tmp_path / "photos"
    _shrink(nuts_images, photos, 1)
    refused = _run(
        photos, "--weights", tiny_weights, "--out", tmp_path / "small", "--max-pixels", "1000", "-q"
    )
    assert refused.exit_code == 3
    assert "pixel" in (tmp_path / "small" / "failures.jsonl").read_text().lower()

    unknown = _run(photos, "--weights", tiny_weights, "--out", tmp_path / "cls", "--classes", "fig,zebra")
    assert unknown.exit_code == 1 and "zebra" in unknown.stderr and "hazelnut" in unknown.stderr

    tile_opts = ["--tile", "128", "--tile-overlap", "0.25", "--classes", "fig,date", "--mask-format", "rle"]
    tiled = _run(photos, "--weights", tiny_weights, "--out", tmp_path / "tiled", "--score", "0.2", *tile_opts)
    assert tiled.exit_code == 0, tiled.output
    coco = COCO(str(tmp_path / "tiled" / "annotations.json"))
    anns = coco.dataset["annotations"]
    assert anns and {a["category_id"] for a in anns} <= {1, 2}
    for a in anns:
        assert isinstance(a["segmentation"], dict)  # RLE
        x, y, w, h = a["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 200 and y + h <= 150
        assert coco.annToMask(a).shape == (150, 200)
