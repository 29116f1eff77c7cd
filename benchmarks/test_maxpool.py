"""max_pool2d_with_indices, fastconv vs PyTorch: the cpu_smoke max-pool entries, both memory
formats, forward and backward (cases from fastconv.bench.cases.MaxPool2d)."""
import pytest

from fastconv.bench import suites

ENTRIES = suites.select(suites.load_layers(), "cpu_smoke", ops=["max_pool2d"])


@pytest.mark.parametrize("pass_name", ["fwd", "bwd"])
@pytest.mark.parametrize("impl", ["fastconv", "torch"])
@pytest.mark.parametrize("memory_format", ["contiguous", "channels_last"])
@pytest.mark.parametrize("entry", ENTRIES, ids=[e["id"] for e in ENTRIES])
def test_max_pool2d(bench_pass, entry, memory_format, impl, pass_name):
    bench_pass(entry, memory_format, impl, pass_name)
