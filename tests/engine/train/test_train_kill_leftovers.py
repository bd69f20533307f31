"""What a SIGKILL of `mrseg train` could leave behind (issue 13, kill anywhere): a half-written checkpoint
temp file (model-sized) is removed by the next save, and the resume's rewrite of metrics.jsonl (cut back to
the checkpoint's iteration) is atomic, so a kill during it keeps the earlier lines."""

from __future__ import annotations

import json

import pytest
import torch

from mrseg.engine.train import metrics
from mrseg.engine.train.checkpoint import save_atomic
from mrseg.engine.train.metrics import MetricsLog


def test_a_killed_saves_temp_file_goes_with_the_next_save(tmp_path):
    stale = tmp_path / ".last.pt.tmp4242"  # the name save_atomic writes under, from a process killed in it
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / ".best.pt.tmp4242"
    other.write_bytes(b"another file's")
    save_atomic({"iteration": torch.tensor(3)}, tmp_path / "last.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".best.pt.tmp4242", "last.pt"]
    assert int(torch.load(tmp_path / "last.pt", weights_only=True)["iteration"]) == 3


def test_the_resume_rewrite_of_metrics_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"type": "train", "iter": i}) for i in range(1, 6)]
    path.write_text("".join(x + "\n" for x in lines))

    def killed(p, text):
        raise KeyboardInterrupt  # stands for the kill: the rewrite never completes

    monkeypatch.setattr(metrics, "atomic_write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        MetricsLog(path, resume_iter=3)
    assert path.read_text().splitlines() == lines  # untouched
    monkeypatch.undo()
    MetricsLog(path, resume_iter=3).close()
    assert path.read_text().splitlines() == lines[:3]
