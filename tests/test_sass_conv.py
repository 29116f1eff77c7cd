"""What the compiled convolution CUDA kernels promise (csrc/cuda/kernels/conv2d_*.cuh), read
from the SASS and resource usage of fastconv._C (no GPU needed): HMMA in the tensor-core
kernels, 128-bit global loads in the channels_last vector variants, registers that fit the
plan's block size, and no local memory. tests/test_sass.py checks every kernel for spills."""
import re

import pytest

import fastconv
from fastconv.tools import sass

pytestmark = [
    pytest.mark.skipif(not fastconv.cuda_kernels_built(), reason="no CUDA kernels in this build"),
    pytest.mark.skipif(sass.find_cuobjdump() is None,
                       reason="no cuobjdump/nvdisasm (pip install nvidia-cuda-cuobjdump "
                              "nvidia-cuda-nvdisasm)"),
]

# Block size of each kernel template per the launch plan (csrc/cuda/launch/conv2d.h).
THREADS = {"conv_igemm_simt": 256, "conv_igemm_wmma": 128, "conv_depthwise_fwd": 256,
           "conv_depthwise_dgrad": 256, "conv_wgrad_reduce": 256}


@pytest.fixture(scope="module")
def conv_kernels():
    found = [k for k in sass.inspect() if re.search(r"\bconv_(igemm|depthwise|wgrad)", k.name)]
    assert found, "cuobjdump listed no convolution kernels in fastconv._C"
    return found


def _template(k):
    return re.search(r"(conv_[a-z_]+?)<", k.name).group(1)


def test_every_variant_is_built_for_both_targets(conv_kernels):
    names = {}
    for k in conv_kernels:
        names.setdefault(k.name, set()).add(k.arch)
    assert all(a == {"sm_80", "sm_90"} for a in names.values())
    assert {_template(k) for k in conv_kernels} == set(THREADS)


def test_registers_fit_the_plan_block_and_no_local_memory(conv_kernels):
    too_many = [(k.arch, k.name, k.registers) for k in conv_kernels
                if k.registers * THREADS[_template(k)] > 65536]
    assert not too_many
    local = [(k.arch, k.name) for k in conv_kernels
             if k.stack or k.local or k.local_memory_instructions]
    assert not local, f"local memory or stack in: {local}"


def test_tensor_core_kernels_issue_hmma(conv_kernels):
    wmma = [k for k in conv_kernels if "wmma" in k.name]
    # 3 passes x 3 storage types (fp16, bf16, fp32 as TF32) x scalar/vector x 2 targets
    assert len(wmma) == 36, [k.name for k in wmma]
    assert all(k.tensor_core for k in wmma), [k.name for k in wmma if not k.tensor_core]
    assert not any(k.tensor_core for k in conv_kernels if "wmma" not in k.name)


def test_vector_variants_use_128_bit_loads_and_async_copies(conv_kernels):
    # conv_igemm_*<Problem, ..., V, V> with V elements = 16 bytes (fp32 4, fp64 2, fp16/bf16 8)
    vector = [k for k in conv_kernels if re.search(r"conv_igemm_(simt|wmma)<.*, (4, 4|2, 2|8, 8)>\(",
                                                    k.name)]
    # SIMT: 3 passes x 2 tiles x (fp32, fp64); wmma: 3 passes x 3 dtypes; x 2 targets
    assert len(vector) == 2 * (3 * 2 * 2 + 3 * 3), [k.name for k in vector]
    assert all(k.vector_128_global for k in vector), [
        k.name for k in vector if not k.vector_128_global]
    # the tensor-core vector panels are filled by cp.async (LDGSTS)
    wmma = [k for k in vector if "wmma" in k.name]
    assert all(any(m.startswith("LDGSTS") for m in k.mnemonics) for k in wmma), [
        k.name for k in wmma if not any(m.startswith("LDGSTS") for m in k.mnemonics)]
