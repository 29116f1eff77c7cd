"""roi_align and roi_pool, fastconv vs torchvision: the cpu_smoke ROI entries, both memory
formats, forward and forward+backward (cases from fastconv.bench.cases_roi)."""
import pytest

from fastconv.bench import suites

ENTRIES = suites.select(suites.load_layers(), "cpu_smoke", ops=["roi_align", "roi_pool"])


@pytest.mark.parametrize("pass_name", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", ["fastconv", "torch"])
@pytest.mark.parametrize("memory_format", ["contiguous", "channels_last"])
@pytest.mark.parametrize("entry", ENTRIES, ids=[e["id"] for e in ENTRIES])
def test_roi(bench_pass, entry, memory_format, impl, pass_name):
    bench_pass(entry, memory_format, impl, pass_name)
