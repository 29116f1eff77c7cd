"""Header probes for the emulated build (shared/SIMT.md 6 and 10): which fp16/bf16 functions of
the installed CUDA toolkit's headers g++ can use as shipped, which ones csrc/simt must supply,
and that the ucontext fiber fallback still works. A toolkit upgrade that changes the table
fails here, naming the function, before it breaks the emulated build in a confusing way."""
import pathlib
import re
import shutil
import subprocess

import pytest

from test_build import _setup_functions

ROOT = pathlib.Path(__file__).resolve().parents[1]
CUDA_HOME = _setup_functions()["find_cuda_home"]()
INCLUDE = pathlib.Path(CUDA_HOME or "/nonexistent") / "include"

pytestmark = pytest.mark.skipif(
    shutil.which("g++") is None or not (INCLUDE / "cuda_fp16.h").exists(),
    reason="needs g++ and the CUDA toolkit headers")

PRELUDE = """
#include <cuda_bf16.h>
#include <cuda_fp16.h>
__half a = __float2half_rn(1.5f), b = __float2half_rn(2.0f);
__half2 a2 = __halves2half2(a, b);
__nv_bfloat16 c = __float2bfloat16_rn(1.5f);
"""
# Usable on the host under g++ as shipped with CUDA 13.0 (SIMT.md 6, first column).
HOST = [
    "float f = __half2float(a);", "__half h = __double2half(1.0);", "int i = __half2int_rz(a);",
    "__half h = __hadd(a, b);", "__half h = __hsub(a, b);", "__half h = __hmul(a, b);",
    "__half h = __hdiv(a, b);", "__half h = __hneg(a);", "__half h = __habs(a);",
    "__half h = __hmax(a, b);", "__half h = __hmin(a, b);", "bool t = __hisnan(a);",
    "__half h = a * b + a;", "bool t = a < b;", "__half2 h = __hadd2(a2, a2);",
    "__half2 h = __hmul2(a2, a2);", "__nv_bfloat16 h = __hadd(c, c);",
    "float f = __bfloat162float(c);", "__nv_bfloat16 h = c * c;",
]
# Device-only in the headers: csrc/simt/fp16.h defines them (SIMT.md 6, second column).
SUPPLIED = [
    "__half h = __hfma(a, b, a);", "__half2 h = __hfma2(a2, a2, a2);",
    "__half h = __hfma_relu(a, b, a);", "__nv_bfloat16 h = __hfma(c, c, c);",
    "__half h = hexp(a);", "__half h = hlog(a);", "__half h = hsqrt(a);", "__half h = hrsqrt(a);",
    "__half h = hrcp(a);", "__half h = hfloor(a);", "__half h = htrunc(a);",
    "__half h = hrint(a);", "int i = __half2int_rn(a);", "__half2 h = hsqrt(a2);",
]


def _command(body, simt):
    src = ("#include \"simt.h\"\n" if simt else "") + PRELUDE + "void probe() {\n" + body + "\n}\n"
    includes = [f"-I{ROOT / 'csrc' / 'simt'}", "-DSIMT_EMULATION"] if simt else []
    includes.append(f"-I{INCLUDE}")  # after csrc/simt, as in the emulated build
    return ["g++", "-std=c++17", "-fsyntax-only", "-x", "c++", "-", *includes], src


def compile_all(bodies, simt=False):
    """[(compiled, stderr)] for each body, compiled in parallel."""
    procs = []
    for body in bodies:
        cmd, src = _command(body, simt)
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        procs.append((proc, src))
    results = []
    for proc, src in procs:
        _, err = proc.communicate(src)
        results.append((proc.returncode == 0, err))
    return results


def compiles(body, simt=False):
    return compile_all([body], simt)[0]


def cudart_version():
    text = (INCLUDE / "cuda_runtime_api.h").read_text(errors="replace")
    match = re.search(r"#define\s+CUDART_VERSION\s+(\d+)", text)
    return int(match.group(1)) if match else None


def test_host_usable_functions_compile_under_gxx():
    ok, err = compiles("\n".join(f"{{ {line} (void)0; }}" for line in HOST))
    assert ok, f"CUDA {cudart_version()}: a host-usable fp16/bf16 function no longer is:\n{err}"


def test_device_only_functions_are_missing_and_simt_supplies_them():
    results = compile_all([f"{{ {line} (void)0; }}" for line in SUPPLIED])
    now_host = [line for line, (ok, _) in zip(SUPPLIED, results) if ok]
    assert not now_host, (f"CUDA {cudart_version()} now declares {now_host} for the host: drop "
                          "simt's definitions in csrc/simt/fp16.h (they would clash) and update "
                          "SIMT.md 6")
    ok, err = compiles("\n".join(f"{{ {line} (void)0; }}" for line in SUPPLIED), simt=True)
    assert ok, err


def test_ucontext_fiber_fallback_runs(tmp_path):
    # The x86-64 assembly switch is the default; ASan/TSan builds and other architectures use
    # ucontext. Both must run barriers, shuffles and exceptions identically.
    src = tmp_path / "fallback.cpp"
    src.write_text(r'''
#include "simt.h"
__global__ void k(int* out) {
  __shared__ int tile[64];
  tile[threadIdx.x] = int(threadIdx.x);
  __syncthreads();
  int v = tile[63 - threadIdx.x];
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) atomicAdd(out, v);
  if (blockIdx.x == 1 && threadIdx.x == 9) __trap();
}
int main() {
  int out = 0;
  simt::launch(k, dim3(1), dim3(64), 0, &out);
  std::printf("%d ", out);
  try {
    simt::launch(k, dim3(2), dim3(64), 0, &out);
  } catch (const simt::Error& e) {
    std::printf("%s\n", e.what());
  }
}
''')
    exe = tmp_path / "fallback"
    for flag in ["-DSIMT_FIBER_UCONTEXT", "-DSIMT_FIBER_DEFAULT"]:
        build = subprocess.run(
            ["g++", "-std=c++17", "-O1", "-fno-strict-aliasing", "-DSIMT_EMULATION", flag,
             f"-I{ROOT / 'csrc' / 'simt'}", f"-I{INCLUDE}", str(src), "-o", str(exe)],
            capture_output=True, text=True)
        assert build.returncode == 0, build.stderr
        run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        # 0 + 1 + ... + 63; the second launch traps in block 1
        assert run.stdout.startswith("2016 cudaErrorLaunchFailure:"), run.stdout
        assert "block (1,0,0) thread (9,0,0)" in run.stdout
