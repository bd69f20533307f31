"""The predict engine: Predictor against the model it wraps, resume from a torn journal, videos with track
ids, streaming to stdout. Small real photos, the tiny seeded model of conftest.py."""

from __future__ import annotations

import json
import shutil
import warnings

import cv2
import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

from mrseg.data.images import read_image
from mrseg.engine import journal
from mrseg.engine.device import DeviceError
from mrseg.engine.predict_run import predict
from mrseg.engine.predictor import PredictError, Predictor
from mrseg.outputs.mask_crop import CroppedMasks
from tests.engine.conftest import build_tiny_model, write_moving_box_video


@pytest.fixture()
def small_folder(tmp_path, nuts_images):
    """Four real photos shrunk to 200x150 (fast to decode, paste and encode)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in nuts_images[:4]:
        cv2.imwrite(str(folder / p.name), cv2.resize(cv2.imread(str(p)), (200, 150)))
    return folder


def _assert_same_masks_but_rounding(masks: np.ndarray, ref: np.ndarray) -> None:
    """The Predictor runs a BN-folded copy: a mask probability within rounding of 0.5 may flip a pixel."""
    assert masks.shape == ref.shape
    assert (masks != ref).sum() <= 1e-3 * max(1, ref.sum())


def test_predictor_returns_the_wrapped_models_detections_filtered_by_score(
    tiny_model, tiny_classes, nuts_images
):
    image = read_image(str(nuts_images[0]))
    with torch.inference_mode():
        ref = tiny_model([torch.from_numpy(image).permute(2, 0, 1).float() / 255])[0]
    assert len(ref["scores"]) >= 2
    # halfway between two scores (keeps some, drops some); the Predictor runs a BN-folded copy whose scores
    # differ from the model's by float rounding, so the threshold must not sit on a score
    ranked = ref["scores"].sort().values
    half = len(ranked) // 2
    score = float(ranked[half - 1] + ranked[half]) / 2
    det = Predictor(model=tiny_model, model_classes=tiny_classes, device="cpu", score=score)(image)
    keep = ref["scores"] >= score
    assert 0 < int(keep.sum()) < len(ref["scores"])
    np.testing.assert_allclose(det.boxes, ref["boxes"][keep].numpy(), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(det.scores, ref["scores"][keep].numpy(), rtol=1e-5)
    np.testing.assert_array_equal(det.labels, ref["labels"][keep].numpy())
    assert det.masks.dtype == bool and det.masks.shape == (len(det), *image.shape[:2])
    _assert_same_masks_but_rounding(det.masks, ref["masks"][keep][:, 0].numpy())
    assert (det.width, det.height) == (image.shape[1], image.shape[0])


def test_predictor_runs_a_fused_copy_and_leaves_the_given_model_alone(tiny_model, tiny_classes, nuts_images):
    from torchvision.ops import FrozenBatchNorm2d

    image = read_image(str(nuts_images[1]))
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    settings = (tiny_model.roi_heads.score_thresh, tiny_model.paste_masks)
    fused = Predictor(model=tiny_model, model_classes=tiny_classes, device="cpu", score=0.3, mask_crops=True)
    plain = Predictor(model=tiny_model, model_classes=tiny_classes, device="cpu", score=0.3, fuse=False)
    assert fused.model is tiny_model and plain.net is tiny_model and fused.net is not tiny_model
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in fused.net.modules())
    a, b = fused(image), plain(image)
    assert len(b) >= 1
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    assert (np.asarray(a.masks) != b.masks).sum() <= 1e-3 * max(1, b.masks.sum())
    # A model built to return mask probabilities (paste_masks=False, what Predictor(weights) builds) has them
    # pasted into box crops: the same pixels as the full-size paste.
    assert isinstance(a.masks, np.ndarray)  # the given model pastes full-size masks itself
    crop_model = build_tiny_model(paste_masks=False)
    crops = Predictor(model=crop_model, model_classes=tiny_classes, device="cpu", score=0.3, mask_crops=True)
    c = crops(image)
    assert isinstance(c.masks, CroppedMasks) and np.asarray(c.masks).sum() > 0
    np.testing.assert_array_equal(np.asarray(c.masks), a.masks)
    as_array = Predictor(model=crop_model, model_classes=tiny_classes, device="cpu", score=0.3)(image)
    assert isinstance(as_array.masks, np.ndarray) and as_array.masks.dtype == bool  # the default for Python
    np.testing.assert_array_equal(as_array.masks, a.masks)
    after = tiny_model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
    assert (tiny_model.roi_heads.score_thresh, tiny_model.paste_masks) == settings


def test_predictor_builds_its_model_with_the_score_threshold_and_never_changes_it(tiny_weights, nuts_images):
    """Predictor(weights) builds the model with its settings (box_score_thresh = score, no full-size paste):
    nothing is set on a built model; the detections equal a plain model's filtered at `score`."""
    predictor = Predictor(tiny_weights, device="cpu", score=0.3)
    assert predictor.model.roi_heads.score_thresh == 0.3 and predictor.model.paste_masks is False
    assert predictor.net.roi_heads.score_thresh == 0.3 and predictor.net.paste_masks is False
    low = Predictor(tiny_weights, device="cpu", score=0.01)
    assert low.model.roi_heads.score_thresh == 0.05  # the box head's own threshold is the floor
    plain = build_tiny_model()
    image = read_image(str(nuts_images[1]))
    with torch.no_grad():
        ref = plain([torch.from_numpy(image).permute(2, 0, 1).float() / 255])[0]
    keep = (ref["scores"] >= 0.3).numpy()
    det = predictor(image)
    assert len(det) == keep.sum() >= 1
    np.testing.assert_allclose(det.scores, ref["scores"].numpy()[keep], atol=1e-5)
    _assert_same_masks_but_rounding(det.masks, ref["masks"][keep][:, 0].numpy())


def test_predictor_takes_paths_batches_and_a_class_filter(tiny_model, tiny_classes, nuts_images):
    predictor = Predictor(model=tiny_model, model_classes=tiny_classes, device="cpu", score=0.2, batch=2)
    from_path = predictor(nuts_images[1])
    from_array = predictor(read_image(str(nuts_images[1])))
    np.testing.assert_allclose(from_path.boxes, from_array.boxes)
    batch = predictor.predict_batch([nuts_images[1], nuts_images[2]])
    assert len(batch) == 2
    np.testing.assert_allclose(batch[0].boxes, from_array.boxes, atol=1e-3)
    assert len(from_array) >= 2 and len(set(from_array.labels.tolist())) >= 2

    figs = Predictor(model=tiny_model, model_classes=tiny_classes, device="cpu", score=0.2, classes=["Fig"])
    det = figs(nuts_images[1])
    assert det.labels.tolist() == [lab for lab in from_array.labels.tolist() if lab == 2]
    by_id = Predictor(model=tiny_model, model_classes=tiny_classes, device="cpu", score=0.2, classes=["2"])
    assert by_id(nuts_images[1]).labels.tolist() == det.labels.tolist()


def test_predictor_rejects_bad_inputs_with_clear_errors(tiny_model, tiny_classes):
    valid = r"date \(1\), fig \(2\), hazelnut \(3\)"
    with pytest.raises(PredictError, match=rf"'zebra' is not a class of this model.*{valid}"):
        Predictor(model=tiny_model, model_classes=tiny_classes, device="cpu", classes=["zebra"])
    predictor = Predictor(model=tiny_model, model_classes=tiny_classes, device="cpu")
    with pytest.raises(PredictError, match=r"RGB uint8 array \[H, W, 3\].*float32"):
        predictor(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(PredictError, match="weights"):
        Predictor(device="cpu")
    with pytest.raises(DeviceError, match="CUDA is not available|not a device"):
        Predictor(
            model=tiny_model,
            model_classes=tiny_classes,
            device="cuda:7" if not torch.cuda.is_available() else "nonsense",
        )


def test_onnx_weights_dispatch_to_the_onnx_runner_or_say_it_is_missing(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mrseg.onnx_runtime" else real(name, *a)
    )
    with pytest.raises(PredictError, match="mrseg.onnx_runtime"):
        Predictor(weights=str(tmp_path / "model.onnx"), device="cpu")


def _annotations(out_dir):
    data = json.loads((out_dir / "annotations.json").read_text())
    for a in data["annotations"]:
        a.pop("id")
    return data["images"], sorted(data["annotations"], key=lambda a: (a["image_id"], a["category_id"]))


def test_resume_after_a_crash_with_a_torn_journal_line_gives_the_clean_result(
    tiny_weights, small_folder, tmp_path
):
    clean = predict(
        [str(small_folder)],
        weights=tiny_weights,
        out=tmp_path / "clean",
        score=0.2,
        workers=0,
        quiet=True,
        formats="coco,labelme",
    )
    assert (clean.processed, clean.failed) == (4, 0)
    COCO(str(tmp_path / "clean" / "annotations.json"))  # loads

    # A crashed run: two inputs journaled, the third torn mid-line, no final files.
    crashed = tmp_path / "crashed"
    shutil.copytree(tmp_path / "clean", crashed)
    (crashed / "annotations.json").unlink()
    records = journal.records_path(crashed, 0)
    lines = records.read_text().splitlines(keepends=True)
    records.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])

    resumed = predict(
        [str(small_folder)],
        weights=tiny_weights,
        out=crashed,
        score=0.2,
        workers=0,
        quiet=True,
        formats="coco,labelme",
        resume=True,
    )
    assert (resumed.processed, resumed.skipped) == (2, 2)
    images, annotations = _annotations(crashed)
    assert sorted(im["id"] for im in images) == [1, 2, 3, 4]
    assert (images, annotations) == _annotations(tmp_path / "clean")
    ids = [json.loads(line)["image"]["id"] for line in records.read_text().splitlines()]
    assert sorted(ids) == [1, 2, 3, 4]  # the torn line was cut, nothing journaled twice

    with pytest.raises(ValueError, match="SOURCE arguments differ"):
        predict([str(small_folder / "0.jpg")], weights=tiny_weights, out=crashed, resume=True, quiet=True)
    with pytest.raises(ValueError, match="already holds a predict run"):
        predict([str(small_folder)], weights=tiny_weights, out=crashed, quiet=True)


def _make_video(path, frames=6, size=(160, 120)):
    return write_moving_box_video(path, frames=frames, size=size, box=(10, 30, 60, 90), step=8)


def test_video_frames_are_predicted_in_order_with_stable_track_ids(tiny_weights, tmp_path):
    video = _make_video(tmp_path / "clip.mp4")
    summary = predict(
        [str(video)],
        weights=tiny_weights,
        out=tmp_path / "out",
        score=0.2,
        workers=1,
        quiet=True,
        formats="coco,overlay",
        vid_stride=2,
    )
    assert (summary.processed, summary.failed) == (3, 0)
    data = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert [(im["video"], im["frame"]) for im in data["images"]] == [
        ("clip.mp4", 0),
        ("clip.mp4", 2),
        ("clip.mp4", 4),
    ]
    assert all("track_id" in a for a in data["annotations"])
    # The tiny model finds one box per class, in about the same place on every frame: one track per class.
    tracks = {}
    for a in data["annotations"]:
        tracks.setdefault(a["category_id"], set()).add(a["track_id"])
    assert tracks and all(len(ids) == 1 for ids in tracks.values())
    assert len({next(iter(ids)) for ids in tracks.values()}) == len(tracks)
    cap = cv2.VideoCapture(str(tmp_path / "out" / "overlay" / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    cap.release()


def test_out_dash_streams_jsonl_lines_and_writes_no_folder(
    tiny_weights, small_folder, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    summary = predict(
        [str(small_folder / "0.jpg"), str(small_folder / "1.jpg")],
        weights=tiny_weights,
        out="-",
        score=0.2,
        workers=0,
        quiet=True,
    )
    lines = capsys.readouterr().out.splitlines()
    assert summary.out_dir is None and len(lines) == 2
    assert [json.loads(line)["image"]["file_name"] for line in lines] == ["0.jpg", "1.jpg"]
    assert not (tmp_path / "runs").exists()
    with pytest.raises(PredictError, match="--out - streams jsonl"):
        predict([str(small_folder)], weights=tiny_weights, out="-", formats="coco")


def test_predictor_is_exported_lazily_from_the_package():
    import mrseg

    assert mrseg.Predictor is Predictor
    with pytest.raises(AttributeError):
        mrseg.NoSuchThing  # noqa: B018


def test_resuming_a_video_continues_its_track_ids(tiny_weights, tmp_path):
    video = _make_video(tmp_path / "clip.mp4", frames=5)
    out = tmp_path / "out"
    predict([str(video)], weights=tiny_weights, out=out, score=0.2, workers=0, quiet=True)
    # Crash after frame 1, with track ids a fresh tracker would never give (so continuing them is visible).
    records = journal.records_path(out, 0)
    lines = [json.loads(line) for line in records.read_text().splitlines()[:2]]
    for line in lines:
        for inst in line["instances"]:
            inst["track_id"] += 40
    records.write_text("".join(json.dumps(line) + "\n" for line in lines))
    summary = predict(
        [str(video)], weights=tiny_weights, out=out, score=0.2, workers=0, quiet=True, resume=True
    )
    assert (summary.processed, summary.skipped) == (3, 2)
    data = json.loads((out / "annotations.json").read_text())
    frame_of = {im["id"]: im["frame"] for im in data["images"]}
    tracks = {}
    for a in data["annotations"]:
        tracks.setdefault(a["category_id"], {})[frame_of[a["image_id"]]] = a["track_id"]
    assert tracks
    for by_frame in tracks.values():
        assert set(by_frame) == {0, 1, 2, 3, 4}
        assert len(set(by_frame.values())) == 1 and next(iter(by_frame.values())) > 40


def test_resume_redoes_video_frames_whose_overlay_segment_a_crash_lost(tiny_weights, tmp_path, monkeypatch):
    from mrseg.engine import tracker as tracker_module
    from mrseg.engine.predict_run import PredictInterrupted
    from mrseg.outputs import video_segments

    video = _make_video(tmp_path / "clip.mp4", frames=6)
    opts = {"weights": tiny_weights, "score": 0.2, "workers": 0, "quiet": True, "formats": "coco,overlay"}
    predict([str(video)], out=tmp_path / "clean", **opts)
    out = tmp_path / "out"

    # run 1: Ctrl-C at frame 3 -> frames 0-2 journaled and their overlay segment committed
    update = tracker_module.Tracker.update
    calls = []

    def interrupt_at_frame_3(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return update(self, *args, **kwargs)

    monkeypatch.setattr(tracker_module.Tracker, "update", interrupt_at_frame_3)
    with pytest.raises(PredictInterrupted):
        predict([str(video)], out=out, **opts)
    monkeypatch.setattr(tracker_module.Tracker, "update", update)

    # run 2: frames 3-5 journaled, then the process dies before its segment is finished (as with kill -9)
    def die(self):
        raise SystemExit("killed")

    monkeypatch.setattr(video_segments.SegmentWriter, "commit", die)
    with pytest.raises(SystemExit):
        predict([str(video)], out=out, resume=True, **opts)
    monkeypatch.undo()
    assert len(journal.records_path(out, 0).read_text().splitlines()) == 6

    # run 3: frames 3-5 are done again, for the overlay; nothing is reported missing
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summary = predict([str(video)], out=out, resume=True, **opts)
    assert (summary.processed, summary.skipped) == (3, 3)
    cap = cv2.VideoCapture(str(out / "overlay" / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    cap.release()
    got, clean = (json.loads((d / "annotations.json").read_text()) for d in (out, tmp_path / "clean"))
    assert [im["frame"] for im in got["images"]] == list(range(6))
    assert [(a["image_id"], a["bbox"]) for a in got["annotations"]] == [
        (a["image_id"], a["bbox"]) for a in clean["annotations"]
    ]
