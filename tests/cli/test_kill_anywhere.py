"""Kill anywhere (issue 13): `mrseg predict` and `mrseg train` SIGKILLed at seeded random moments and
continued with `--resume` each time end with the files of an uninterrupted run (byte for byte;
`annotations.json` but for its date; overlay videos rebuilt from several segments frame for frame within
re-encoding noise). The runs go through benchmarks/kill_campaign.py's warm fork server (a child per run, as
`python -m mrseg` runs it, killed with SIGKILL); the last resume of each predict case is a real
`python -m mrseg` process. Tiny seeded model of tests/engine/conftest.py, photos shrunk to 96x72, a generated
6-frame video; the journal commits every 0.2 s so that kills land between commits too.
benchmarks/kill_campaign.py runs the larger campaign."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import kill_campaign as kc  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/engine/conftest.py

CASES = {  # name: (images, video frames, formats, kills, seed): 21 kills in all
    "images-coco-results-jsonl": (3, 0, "coco,coco-results,jsonl", 6, 1),
    "images-labelme-overlay": (2, 0, "labelme,overlay", 5, 2),
    "image-yolo": (1, 0, "yolo", 4, 3),
    "video-coco-jsonl-overlay": (0, 6, "coco,jsonl,overlay", 6, 4),
}


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    runner = kc.WarmRunner(tmp_path_factory.mktemp("logs"), commit_seconds=0.2)
    yield runner
    runner.close()


def _cold_last_resume(tmp_path):
    return kc.ColdRunner(tmp_path / "cold-logs")  # `python -m mrseg predict ... --resume`, as a user runs it


@pytest.mark.parametrize("case", list(CASES))
def test_predict_killed_anywhere_resumes_to_the_clean_files(case, warm, tiny_weights, nuts_images, tmp_path):
    n_images, frames, formats, kills, seed = CASES[case]
    sources = kc.make_predict_inputs(tmp_path / "inputs", nuts_images, n_images, frames)
    camp = kc.predict_campaign(warm, tmp_path, sources, tiny_weights, kills, seed, formats=formats,
                               last=_cold_last_resume(tmp_path))  # fmt: skip
    assert camp.kills >= kills and camp.completed_chains >= 1
    assert camp.problems == []
    assert camp.files_compared > 0


def test_train_killed_anywhere_resumes_to_the_same_weights(warm, tmp_path):
    shapes = kc.make_shapes(tmp_path / "shapes", n=4)
    camp = kc.train_campaign(warm, tmp_path, shapes, kills=5, seed=3, iters=4)
    assert camp.kills >= 5 and camp.completed_chains >= 1
    assert camp.problems == []
