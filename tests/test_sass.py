"""What the compiled CUDA kernels promise, read from the SASS and resource usage (no GPU needed)."""
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

BLOCK_THREADS = 256  # every max-pool launch plan (cuda/launch/max_pool2d.h)


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


def test_registers_fit_the_launch_block(kernels):
    assert all(k.registers * BLOCK_THREADS <= 65536 for k in kernels)


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
