"""Build fastconv._C: CPU kernels always, CUDA kernels when nvcc and a CUDA build of PyTorch exist.

Environment knobs:
  FASTCONV_CUDA=0|1      force the CUDA kernels out of / into the build (default: auto)
  FASTCONV_SIMT=0        leave out fastconv._simt, the emulated CUDA kernels (default: built
                         whenever the CUDA toolkit's headers are found)
  CUDA_HOME / CUDA_PATH  the CUDA toolkit root; otherwise found from `nvcc` (see find_cuda_home)
  TORCH_CUDA_ARCH_LIST   GPU targets; default "8.0;9.0" when no GPU is visible
  MAX_JOBS               parallel compile jobs for ninja
"""
import glob
import os
import re
import shutil

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _is_toolkit_root(path):
    """A CUDA toolkit root has bin/nvcc and the runtime library next to it."""
    if not path or not os.path.isfile(os.path.join(path, "bin", "nvcc")):
        return False
    libs = glob.glob(os.path.join(path, "lib64", "libcudart.so*"))
    libs += glob.glob(os.path.join(path, "targets", "*", "lib", "libcudart.so*"))
    return bool(libs)


def find_cuda_home():
    """The real toolkit root, even when `nvcc` on PATH is a wrapper script outside it.

    PyTorch guesses CUDA_HOME as dirname(dirname(which nvcc)); for a wrapper such as
    /usr/local/bin/nvcc that gives /usr/local and linking fails (-lcudart not found).
    """
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    candidates = []
    if nvcc:
        real = os.path.realpath(nvcc)
        candidates.append(os.path.dirname(os.path.dirname(real)))
        try:  # a wrapper script names the real nvcc: `exec /usr/local/cuda-13.0/bin/nvcc "$@"`
            with open(real, "rb") as f:
                head = f.read(4096)
            if head.startswith(b"#!"):
                for match in re.findall(rb"(/[^\s\"']+)/bin/nvcc", head):
                    candidates.append(match.decode())
        except OSError:
            pass
    candidates += ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    for path in candidates:
        if _is_toolkit_root(path):
            return os.path.realpath(path)
    return None


def want_cuda(torch_cuda_version, cuda_home):
    forced = os.environ.get("FASTCONV_CUDA")
    available = torch_cuda_version is not None and cuda_home is not None
    if forced == "0":
        return False
    if forced == "1":
        if not available:
            raise RuntimeError(
                "FASTCONV_CUDA=1 but the CUDA kernels cannot be built: "
                f"torch.version.cuda={torch_cuda_version}, CUDA toolkit root={cuda_home}")
        return True
    return available


CUDA_HOME = find_cuda_home()
if CUDA_HOME:
    os.environ["CUDA_HOME"] = CUDA_HOME  # before torch.utils.cpp_extension reads it

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

WITH_CUDA = want_cuda(torch.version.cuda, CUDA_HOME)
if WITH_CUDA and not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
    os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"


def cuda_library_include_dirs(cuda_home):
    """ATen's CUDA headers include cuSPARSE, cuBLAS and cuSOLVER headers. A minimal toolkit (as
    installed here) lacks them; the CUDA build of PyTorch depends on the `nvidia-*` wheels that
    ship them under site-packages/nvidia/<pkg>/include, so fall back to those."""
    if os.path.isfile(os.path.join(cuda_home, "include", "cusparse.h")):
        return []
    import nvidia  # namespace package of the nvidia-* wheels that torch depends on

    found = []
    for base in nvidia.__path__:
        found += sorted(glob.glob(os.path.join(base, "*", "include")))
    return [d for d in found if os.path.isfile(os.path.join(d, "cusparse.h"))]


def sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


# -fopenmp: at::parallel_for is a header template that runs serially unless _OPENMP is defined;
# the OpenMP runtime itself is the one PyTorch already loads (libgomp), so nothing is linked.
cxx_flags = ["-O3", "-fno-math-errno", "-fopenmp", "-Wall", "-Wno-unknown-pragmas"]
main_sources = (sources("csrc/fastconv.cpp") + sources("csrc/schemas/*.cpp") + sources("csrc/meta/*.cpp")
                + sources("csrc/cpu/*.cpp"))
define_macros = []
ext_kwargs = dict(
    name="fastconv._C",
    include_dirs=[os.path.join(ROOT, "csrc")],
    define_macros=define_macros,
)
if WITH_CUDA:
    ext_kwargs["include_dirs"] += cuda_library_include_dirs(CUDA_HOME)
    ext_kwargs["define_macros"] = define_macros + [("FASTCONV_WITH_CUDA", "1")]
    main_ext = CUDAExtension(
        sources=main_sources + sources("csrc/cuda/*.cu"),
        extra_compile_args={
            "cxx": cxx_flags,
            # --resource-usage prints registers, shared memory and spills per kernel (checked
            # by tests/test_build.py from the build log); -lineinfo keeps profilers useful.
            "nvcc": ["-O3", "-lineinfo", "--resource-usage", "--expt-relaxed-constexpr"],
        },
        **ext_kwargs,
    )
else:
    main_ext = CppExtension(sources=main_sources, extra_compile_args={"cxx": cxx_flags}, **ext_kwargs)

# fastconv._simt: the CUDA kernels compiled by g++ against the header-only emulator in
# csrc/simt (shared/SIMT.md), registered as torch.ops.fastconv_simt and run on CPU tensors
# under fastconv.testing.emulate_cuda(). Needs only the toolkit's headers (vector_types.h,
# cuda_fp16.h, cuda_bf16.h), no GPU and no CUDA build of PyTorch. Own module and flags: the
# emulator's macros never reach other translation units, and its kernels (namespace
# fastconv::simt) never share a shared object with nvcc's (fastconv::cuda).
def simt_extension(cuda_home):
    if os.environ.get("FASTCONV_SIMT") == "0" or not cuda_home:
        return None
    cuda_include = os.path.join(cuda_home, "include")
    if not all(os.path.isfile(os.path.join(cuda_include, h))
               for h in ("vector_types.h", "cuda_fp16.h", "cuda_bf16.h")):
        return None
    return CppExtension(
        name="fastconv._simt",
        sources=sources("csrc/simt/*.cpp"),
        # csrc/simt first: its replacement headers shadow the toolkit's
        include_dirs=[os.path.join(ROOT, "csrc", "simt"), os.path.join(ROOT, "csrc"), cuda_include],
        extra_compile_args={"cxx": ["-O1", "-g", "-fno-strict-aliasing", "-Wall",
                                    "-Wno-unknown-pragmas", "-DSIMT_EMULATION"]},
    )


SIMT_EXT = simt_extension(CUDA_HOME)


class PersistentBuildExtension(BuildExtension):
    """Keeps ninja's objects in ./build/temp for every way of building (pip's editable
    install included, which would otherwise use a fresh temporary directory), so a rebuild
    after a one-file change recompiles that file only. Each extension has its own directory
    (and ninja logs), so building one never invalidates the other's objects."""

    def finalize_options(self):
        super().finalize_options()
        self.build_temp = os.path.join(ROOT, "build", "temp")

    def build_extension(self, ext):
        self.build_temp = os.path.join(ROOT, "build", "temp" if ext.name == "fastconv._C"
                                       else "temp" + ext.name.split(".")[-1])
        super().build_extension(ext)


setup(
    ext_modules=[main_ext] + ([SIMT_EXT] if SIMT_EXT else []),
    cmdclass={"build_ext": PersistentBuildExtension.with_options(use_ninja=True)},
)
