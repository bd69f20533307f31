"""Numbered run folders (`runs/predict`, `runs/predict2`, ...; `runs/train/exp`, `exp2`, ...)."""

from __future__ import annotations

from mrseg.engine.run_dirs import next_run_dir, numbered_dirs


def test_numbered_dirs_sorts_by_number_and_ignores_other_names(tmp_path):
    for name in ("exp10", "exp", "exp2", "exp3b", "expx", "other", "exp9"):
        (tmp_path / name).mkdir()
    (tmp_path / "exp4").write_text("a file, not a run")
    assert [p.name for p in numbered_dirs(tmp_path / "exp")] == ["exp", "exp2", "exp9", "exp10"]
    assert numbered_dirs(tmp_path / "missing" / "exp") == []


def test_next_run_dir_takes_the_first_free_number(tmp_path):
    base = tmp_path / "exp"
    assert next_run_dir(base) == base
    base.mkdir()
    assert next_run_dir(base) == tmp_path / "exp2"
    assert next_run_dir(base, exist_ok=True) == base
    (tmp_path / "exp2").mkdir()
    (tmp_path / "exp4").mkdir()
    assert next_run_dir(base) == tmp_path / "exp3"
