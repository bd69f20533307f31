"""The per-item files a run owns (`OUT/.mrseg/owned.txt`): the fast layout must name exactly the files the
writers themselves write (their `path_for`), for images, nested and unsafe names, and video frames."""

from __future__ import annotations

from mrseg.engine.predict import owned_outputs
from mrseg.outputs.detections import InputItem

ITEMS = [
    InputItem(id=1, path="/d/a.jpg", rel_path="a.jpg"),
    InputItem(id=2, path="/d/sub/b.PNG", rel_path="sub/b.PNG"),
    InputItem(id=3, path="/d/x.jpg", rel_path="../../etc/x.jpg"),
    InputItem(id=4, path="/d/n.jpg", rel_path="n.jpg", name="renamed/n_1"),
    InputItem(id=5, path="/v/clip.mp4", rel_path="clip/000000.jpg", frame=0, video="clip.mp4", fps=25.0),
    InputItem(id=6, path="/v/c2.mp4", rel_path="c2/000003.jpg", frame=3, video="c2.mp4", name="c2_1/000003"),
]
FORMATS = {"labelme", "yolo", "overlay"}


def test_the_fast_layout_names_the_writers_own_paths(tmp_path):
    reference = owned_outputs._writer_paths(tmp_path, FORMATS)
    fast = owned_outputs._layout_paths(FORMATS)
    for item in ITEMS:
        assert sorted(fast(item)) == sorted(reference(item)), item


def test_owned_paths_falls_back_to_the_writers_when_the_layout_disagrees(tmp_path, monkeypatch):
    expected = owned_outputs.owned_paths(tmp_path, ITEMS, FORMATS)
    assert "yolo/data.yaml" in expected and "overlay/clip.mp4" in expected
    monkeypatch.setattr(owned_outputs, "_layout_paths", lambda formats: lambda item: ["wrong"])
    assert owned_outputs.owned_paths(tmp_path, ITEMS, FORMATS) == expected
