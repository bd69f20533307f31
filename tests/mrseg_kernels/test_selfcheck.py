"""python -m mrseg_kernels.selfcheck: prints the build and OK; fails when the op differs from torchvision."""

import mrseg_kernels
from mrseg_kernels import selfcheck


def test_selfcheck_passes(capsys):
    assert selfcheck.main() == 0
    out = capsys.readouterr().out
    assert "CUDA kernels compiled" in out
    assert out.strip().splitlines()[-1] == "OK"


def test_selfcheck_reports_a_mismatch(capsys, monkeypatch):
    real = mrseg_kernels.roi_align

    def off_by_a_bit(*args, **kwargs):
        return real(*args, **kwargs) * 1.001

    monkeypatch.setattr(mrseg_kernels, "roi_align", off_by_a_bit)
    assert selfcheck.main() == 1
    assert "FAILED" in capsys.readouterr().out
