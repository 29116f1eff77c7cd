"""conv2d and conv_transpose2d, fastconv vs PyTorch: the cpu_smoke convolution entries, both
memory formats, forward, input gradient and weight gradient timed separately (cases from
fastconv.bench.cases_conv)."""
import pytest

from fastconv.bench import suites

ENTRIES = suites.select(suites.load_layers(), "cpu_smoke", ops=["conv2d", "conv_transpose2d"])
PARAMS = [(e, p) for e in ENTRIES
          for p in (["fwd", "dgrad", "wgrad"] if e.get("input_grad", True) else ["fwd", "wgrad"])]


@pytest.mark.parametrize("impl", ["fastconv", "torch"])
@pytest.mark.parametrize("memory_format", ["contiguous", "channels_last"])
@pytest.mark.parametrize("entry, pass_name", PARAMS,
                         ids=[f"{e['id']}-{p}" for e, p in PARAMS])
def test_conv(bench_pass, entry, pass_name, memory_format, impl):
    bench_pass(entry, memory_format, impl, pass_name)
