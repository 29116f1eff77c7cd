"""What the compiled CUDA kernels promise, read from the SASS and resource usage (no GPU needed)."""
import pathlib
import re
import shutil
import subprocess

import pytest

import fastconv
from fastconv.tools import sass

pytestmark = [
    pytest.mark.skipif(not fastconv.cuda_kernels_built(), reason="no CUDA kernels in this build"),
    pytest.mark.skipif(sass.find_cuobjdump() is None,
                       reason="no cuobjdump/nvdisasm (pip install nvidia-cuda-cuobjdump "
                              "nvidia-cuda-nvdisasm)"),
]

ROOT = pathlib.Path(__file__).resolve().parents[1]
REGISTERS_PER_SM = 65536  # sm_80 and sm_90


def claims_tensor_cores(kernel):
    """Kernels that promise tensor-core instructions: by name (conv2d_wmma.cuh's conv_igemm_wmma,
    the probes' wmma_*)."""
    return "wmma" in kernel.name


@pytest.fixture(scope="module")
def kernels():
    found = sass.inspect()
    assert found, "cuobjdump listed no kernels in fastconv._C"
    return found


def test_every_kernel_is_built_for_sm80_and_sm90(kernels):
    archs = {}
    for k in kernels:
        archs.setdefault(k.name, set()).add(k.arch)
    assert all(a == {"sm_80", "sm_90"} for a in archs.values()), archs


def test_no_local_memory_stack_or_spills(kernels):
    bad = [(k.arch, k.name) for k in kernels
           if k.stack or k.local or k.local_memory_instructions]
    assert not bad, f"local memory or stack in: {bad}"


def test_every_kernel_declares_launch_bounds(kernels):
    # Without __launch_bounds__ ptxas may use registers a large block cannot get ("too many
    # resources requested for launch"), and the next test could not check it.
    missing = sorted({k.name for k in kernels if k.max_threads == 0})
    assert not missing, f"kernels without __launch_bounds__: {missing}"


def test_registers_fit_the_launch_block(kernels):
    # registers x the largest block the kernel's __launch_bounds__ allow <= the SM's registers
    too_many = [(k.arch, k.name, k.registers, k.max_threads) for k in kernels
                if k.max_threads and k.registers * k.max_threads > REGISTERS_PER_SM]
    assert not too_many, too_many


def test_kernels_that_claim_tensor_cores_use_them(kernels):
    claimed = [k for k in kernels if claims_tensor_cores(k)]
    if not claimed:
        pytest.skip("no tensor-core kernel in this build (the probes below still check the check)")
    assert all(k.tensor_core for k in claimed), [(k.arch, k.name) for k in claimed
                                                  if not k.tensor_core]


def test_vectorized_nhwc_kernels_use_128_bit_loads(kernels):
    # The NHWC kernels with a 16-byte pack (float x 4, double x 2) must load whole packs.
    pack = re.compile(r"max_pool2d_(forward|backward)_nhwc<(float, float, 4|double, double, 2)>")
    vectorized = [k for k in kernels if pack.search(k.name)]
    assert len(vectorized) == 8  # 2 passes x 2 dtypes x 2 architectures
    assert all(k.vector_128_global for k in vectorized), [k.name for k in vectorized
                                                          if not k.vector_128_global]


def test_command_line_lists_every_kernel(capsys, kernels):
    assert sass.main([]) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == len(kernels) + 1


# ---- the checks themselves, on kernels compiled here (tests/cuda/sass_probes.cu) -----------------
@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("no nvcc")
    obj = tmp_path_factory.mktemp("sass") / "sass_probes.o"
    build = subprocess.run(
        [nvcc, "-c", "-o", str(obj), f"-I{ROOT / 'csrc'}", "-gencode", "arch=compute_80,code=sm_80",
         "-gencode", "arch=compute_90,code=sm_90", str(ROOT / "tests" / "cuda" / "sass_probes.cu")],
        capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return {(k.arch, k.name.split("(")[0].replace("void ", "")): k for k in sass.inspect(str(obj))}


def test_probe_tensor_cores_are_seen_in_wmma_kernels_only(probes):
    for arch in ("sm_80", "sm_90"):
        wmma = [probes[arch, n] for n in ("wmma_probe<__half>", "wmma_probe<__nv_bfloat16>",
                                          "wmma_tf32_probe")]
        assert all(k.tensor_core and claims_tensor_cores(k) for k in wmma)
        assert not probes[arch, "no_wmma"].tensor_core  # the check can fail
        assert any(m.startswith("HMMA.1684.F32.TF32") or m.startswith("HMMA.16816.F32.TF32")
                   for m in probes[arch, "wmma_tf32_probe"].mnemonics)
        assert any(".BF16" in m for m in probes[arch, "wmma_probe<__nv_bfloat16>"].mnemonics)


def test_probe_cp_async_shim_gives_nvcc_the_real_pipeline_primitives(probes):
    # cuda/launch/async_copy.h under nvcc: __pipeline_memcpy_async is a real cp.async (LDGSTS)
    for arch in ("sm_80", "sm_90"):
        assert probes[arch, "cp_async_probe"].async_copy
        assert not probes[arch, "no_wmma"].async_copy


def test_probe_launch_bounds_are_read_back(probes):
    bounds = {name: k.max_threads for (arch, name), k in probes.items()}
    assert bounds == {"wmma_probe<__half>": 64, "wmma_probe<__nv_bfloat16>": 64,
                      "wmma_tf32_probe": 128, "no_wmma": 256, "cp_async_probe": 256}
