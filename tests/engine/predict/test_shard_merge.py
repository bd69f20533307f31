"""Merging the journals of several ranks (issue 13, point 10).

- An input journaled twice (a resume that gave it to another rank) keeps its most recent line: ranks are
  ordered by number (`records-2` before `records-10`, not as strings) and a resume with another number of
  ranks starts a new journal generation that comes after the older ones.
- A multi-node run whose ranks wrote to different disks (no shared --out) stops with an error that says so,
  instead of final files that silently lack the other nodes' inputs.
"""

from __future__ import annotations

import json

import cv2
import pytest

from mrseg.engine.distributed import Rank
from mrseg.engine.predict import journal
from mrseg.engine.predict import run as predict_run
from mrseg.engine.predict.predictor import PredictError
from mrseg.engine.predict.run import predict
from mrseg.engine.predict.run_folder import start_state
from mrseg.outputs import finalize

META = {"sources": ["imgs"], "vid_stride": 1, "formats": ["jsonl"]}


def _line(image_id: int, tag: str) -> str:
    image = {"id": image_id, "file_name": f"{tag}.jpg", "width": 4, "height": 3}
    return json.dumps({"image": image, "instances": []}) + "\n"


def _merged(out) -> dict[int, str]:
    finalize(out, ["jsonl"], journal.all_records_paths(out), [{"id": 1, "name": "a"}])
    rows = [json.loads(s) for s in (out / "predictions.jsonl").read_text().splitlines()]
    return {r["image"]["id"]: r["image"]["file_name"] for r in rows}


def _append(out, name: str, text: str) -> None:
    with open(out / ".mrseg" / name, "a") as f:
        f.write(text)


@pytest.mark.parametrize("old_rank,new_rank", [(2, 10), (10, 2)])
def test_a_resume_with_another_number_of_ranks_keeps_the_newest_line(tmp_path, old_rank, new_rank):
    out = tmp_path / "out"
    start_state(out, {**META, "world_size": 12}, resume=False)
    _append(out, f"records-{old_rank}.jsonl", _line(5, "old") + _line(6, "six"))
    _append(out, f"failures-{old_rank}.jsonl", json.dumps({"id": 7, "reason": "old"}) + "\n")
    start_state(out, {**META, "world_size": 11}, resume=True)  # input 5 now goes to another rank
    _append(out, f"records-{new_rank}.jsonl", _line(5, "new"))
    _append(out, f"failures-{new_rank}.jsonl", json.dumps({"id": 7, "reason": "new"}) + "\n")
    assert _merged(out) == {5: "new.jpg", 6: "six.jpg"}
    assert journal.merge_failures(out) == 1
    assert json.loads((out / "failures.jsonl").read_text())["reason"] == "new"
    assert json.loads((out / ".mrseg" / "run.json").read_text())["world_size"] == 11


def test_ranks_merge_in_numeric_order(tmp_path):
    out = tmp_path / "out"
    start_state(out, {**META, "world_size": 11}, resume=False)
    for rank in (10, 2):
        _append(out, f"records-{rank}.jsonl", _line(rank, f"r{rank}"))
    names = [p.name for p in journal.all_records_paths(out)]
    assert names == ["records-2.jsonl", "records-10.jsonl"]


class _TwoNodes(Rank):
    """Rank 0 of 2 whose rank 1 reports its work but wrote it on another node's disk (never seen here)."""

    def __init__(self, backend, timeout):
        super().__init__(rank=0, world=2)

    def barrier(self):
        pass

    def broadcast(self, obj):
        return obj

    def gather(self, obj):
        return [obj, obj]  # rank 1 did as much as rank 0, elsewhere


def test_a_multi_node_run_without_a_shared_out_fails_loudly(tmp_path, nuts_images, tiny_weights, monkeypatch):
    images = tmp_path / "imgs"
    images.mkdir()
    for i, src in enumerate(nuts_images[:4]):
        cv2.imwrite(str(images / f"{i}.jpg"), cv2.resize(cv2.imread(str(src)), (120, 90)))
    monkeypatch.setattr(predict_run, "join", _TwoNodes)
    out = tmp_path / "out"
    with pytest.raises(PredictError, match="2 input.*shared by every node.*--resume"):
        predict([str(images)], weights=tiny_weights, out=out, device="cpu", workers=0, quiet=True)
    assert not (out / "annotations.json").exists()
    assert not (out / ".mrseg" / "lock").exists()


def test_other_ranks_that_do_not_see_rank_0s_lock_say_the_filesystem_is_not_shared(tmp_path):
    from mrseg.engine.predict.run_folder import check_same_lock
    from mrseg.engine.predict.run_lock import RunLock

    lock = RunLock.acquire(tmp_path / "out")
    try:
        assert check_same_lock(tmp_path / "out", lock.token()) is None
        elsewhere = check_same_lock(tmp_path / "other-node-disk", lock.token())
        assert "not on a filesystem shared by every node" in elsewhere
    finally:
        lock.release()
