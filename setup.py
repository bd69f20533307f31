"""Builds the compiled ops in mrseg_kernels/csrc (CPU always; CUDA whenever a toolkit is found)."""

import glob
import os

from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension


def kernel_extension():
    here = os.path.dirname(os.path.abspath(__file__))
    csrc = os.path.join("mrseg_kernels", "csrc")
    cpp = sorted(glob.glob(os.path.join(here, csrc, "*.cpp")))
    cuda = sorted(glob.glob(os.path.join(here, csrc, "*.cu")))
    sources = [os.path.relpath(p, here) for p in cpp]
    extra = {"cxx": ["-O3", "-fopenmp", "-DNDEBUG"]}
    # libstdc++ named explicitly, ahead of anything the environment appends: where the toolchain adds
    # -static-libstdc++ (a lent H200's image did), the extension otherwise gets a private libstdc++ whose
    # locale is never initialised, and formatting any TORCH_CHECK message segfaults (or truncates it).
    link = ["-fopenmp", "-lstdc++"]
    with_cuda = bool(cuda) and (CUDA_HOME is not None or os.environ.get("MRSEG_FORCE_CUDA") == "1")
    if with_cuda:
        sources += [os.path.relpath(p, here) for p in cuda]
        extra["cxx"].append("-DMRSEG_WITH_CUDA")
        extra["nvcc"] = ["-O3", "-DMRSEG_WITH_CUDA", "--expt-relaxed-constexpr"]
        return CUDAExtension(
            "mrseg_kernels._C", sources, extra_compile_args=extra, extra_link_args=link
        )
    return CppExtension("mrseg_kernels._C", sources, extra_compile_args=extra, extra_link_args=link)


setup(ext_modules=[kernel_extension()], cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)})
