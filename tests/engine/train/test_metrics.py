"""metrics.jsonl (MetricsLog, read_metrics): a fresh run starts the file, a resume cuts it back to the resumed
iteration (a torn last line included), every record is on disk as soon as it is written, and memory_mb reads
what the kernel reports (/proc/self/status) or what torch's CUDA allocator does. The atomicity of the resume
rewrite is tested in test_train_kill_leftovers.py."""

from __future__ import annotations

import json
import mmap
import time
from pathlib import Path

import pytest
import torch

from mrseg.engine.train.metrics import MetricsLog, memory_mb, read_metrics


def lines_of(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_records_are_on_disk_line_by_line_with_the_time_they_were_written(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    before = time.time()
    log.write({"type": "train", "iter": 1, "loss": 0.5})
    after = time.time()
    (record,) = lines_of(path)
    assert round(before, 3) <= record.pop("time") <= round(after, 3)
    assert record == {"type": "train", "iter": 1, "loss": 0.5}
    log.write({"type": "eval", "iter": 1, "segm_AP": 0.25})  # still open: a reader sees it now
    assert [r["type"] for r in lines_of(path)] == ["train", "eval"]
    log.close()
    assert read_metrics(path) == lines_of(path)


def test_a_fresh_run_starts_the_file_over(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"type": "train", "iter": 7}) + "\n", encoding="utf-8")
    log = MetricsLog(path)
    log.write({"type": "train", "iter": 1})
    log.close()
    assert [r["iter"] for r in lines_of(path)] == [1]


def test_a_resume_keeps_the_records_up_to_its_iteration_and_drops_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = [{"type": "train", "iter": i} for i in range(1, 7)] + [{"type": "eval", "iter": 4, "AP": 1}]
    text = "".join(json.dumps(r) + "\n" for r in records)
    path.write_text(text + '{"type": "train", "iter": 7, "lo', encoding="utf-8")  # killed mid-line
    log = MetricsLog(path, resume_iter=4)
    log.write({"type": "train", "iter": 5, "again": True})
    log.close()
    kept = [{k: v for k, v in r.items() if k != "time"} for r in lines_of(path)]  # every line parses
    assert kept == [*records[:4], records[6], {"type": "train", "iter": 5, "again": True}]


def test_a_resume_past_every_record_keeps_them_all_and_a_resume_without_a_file_starts_one(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"type": "train", "iter": i}) + "\n" for i in (2, 4)]
    path.write_text("".join(lines), encoding="utf-8")
    MetricsLog(path, resume_iter=10).close()
    assert path.read_text(encoding="utf-8") == "".join(lines)
    missing = tmp_path / "other" / "metrics.jsonl"
    missing.parent.mkdir()
    MetricsLog(missing, resume_iter=3).close()
    assert missing.read_text(encoding="utf-8") == ""


def test_read_metrics_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    torn = '{"type": "train", "iter": 1}\n{"type": "eval", "iter": 1}\n{"type": "tra'
    path.write_text(torn, encoding="utf-8")
    assert read_metrics(path) == [{"type": "train", "iter": 1}, {"type": "eval", "iter": 1}]


def kernel_rss_mib() -> float:
    for line in open("/proc/self/status", encoding="ascii"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024  # kB
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux's /proc")
def test_memory_mb_on_the_cpu_is_this_processs_resident_memory():
    assert memory_mb(torch.device("cpu")) == pytest.approx(kernel_rss_mib(), abs=4)
    before = memory_mb(torch.device("cpu"))
    # 64 MiB of fresh anonymous pages, every one touched: a malloc'd array may reuse pages that the process
    # already holds (after other tests freed theirs), and then RSS does not grow (seen: 0.0 MiB)
    block = mmap.mmap(-1, 64 * 2**20)
    for offset in range(0, len(block), mmap.PAGESIZE):
        block[offset] = 1
    grown = memory_mb(torch.device("cpu")) - before
    block.close()
    assert 56 <= grown <= 72


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_memory_mb_on_cuda_is_the_allocators_peak():
    device = torch.device("cuda")
    torch.cuda.reset_peak_memory_stats(device)
    block = torch.empty(32 * 2**20, dtype=torch.uint8, device=device)
    del block
    assert memory_mb(device) == torch.cuda.max_memory_allocated(device) / 2**20 >= 32
