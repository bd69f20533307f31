"""Output paths derived from hostile input names never leave the output folder."""

from __future__ import annotations

import os

import pytest

from mrseg.outputs.detections import InputItem
from mrseg.outputs.paths import output_path, output_stem, safe_relative_path

HOSTILE = [
    "../../etc/x.jpg",
    "/etc/passwd.jpg",
    "..\\..\\windows\\x.jpg",
    "C:\\Users\\me\\x.jpg",
    "a/../../../b.jpg",
    "./././..",
    "",
    "sub/\x00evil\n.jpg",
    "//server/share/x.jpg",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_stay_inside(tmp_path, name):
    out = tmp_path / "out"
    rel = safe_relative_path(name)
    assert not rel.startswith("/") and ".." not in rel.split("/") and "\\" not in rel
    assert not any(ord(c) < 32 for c in rel)
    path = output_path(out, "labelme", output_stem(InputItem(id=1, path=name, rel_path=name)), suffix=".json")
    assert os.path.commonpath([out, path]) == str(out)
    assert path.name.endswith(".json")


def test_ordinary_names_kept():
    assert safe_relative_path("a/b c/ü 1.jpg") == "a/b c/ü 1.jpg"
    assert safe_relative_path("../imgs/x.jpg") == "imgs/x.jpg"
    assert safe_relative_path("C:\\data\\x.jpg") == "data/x.jpg"
    assert output_stem(InputItem(id=1, path="p", rel_path="a/b.tar.jpg")) == "a/b.tar"
    assert output_stem(InputItem(id=1, path="p", rel_path="x.jpg", name="x_2")) == "x_2"
    assert output_stem(InputItem(id=1, path="p", rel_path="..")) == "unnamed"


def test_output_path_layout(tmp_path):
    p = output_path(tmp_path, "yolo", "labels", "a/b", suffix=".txt")
    assert p == tmp_path / "yolo" / "labels" / "a" / "b.txt"
