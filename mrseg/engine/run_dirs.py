"""The numbered run folders of `mrseg predict` and `mrseg train`: `exp`, `exp2`, `exp3`, ..."""

from __future__ import annotations

import re
from pathlib import Path


def numbered_dirs(base: Path) -> list[Path]:
    """The existing folders `base`, `base2`, `base3`, ... in number order (`base` counts as 1)."""
    pattern = re.compile(re.escape(base.name) + r"(\d*)")
    found = []
    if base.parent.is_dir():
        for p in base.parent.iterdir():
            m = pattern.fullmatch(p.name)
            if m and p.is_dir():
                found.append((int(m.group(1) or 1), p))
    return [p for _, p in sorted(found)]


def next_run_dir(base: Path, exist_ok: bool = False) -> Path:
    """`base`, else the first of `base2`, `base3`, ... that does not exist (`base` itself with exist_ok)."""
    if exist_ok or not base.exists():
        return base
    n = 2
    while base.with_name(f"{base.name}{n}").exists():
        n += 1
    return base.with_name(f"{base.name}{n}")
