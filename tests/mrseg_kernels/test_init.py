"""Importing mrseg_kernels without its compiled extension says how to build it."""

import subprocess
import sys


def test_missing_extension_says_how_to_build():
    # A None entry in sys.modules makes `from mrseg_kernels import _C` raise ImportError, like a missing .so.
    code = "import sys; sys.modules['mrseg_kernels._C'] = None; import mrseg_kernels"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "ImportError" in result.stderr
    assert "make install" in result.stderr
    assert "pip install --no-build-isolation -e ." in result.stderr
