"""Fused BatchNorm + ReLU (+ residual add), fastconv vs PyTorch eager: the cpu_smoke bn_relu
entries, both memory formats, training forward, forward+backward and inference (cases from
fastconv.bench.cases_bn.BatchNormReLU)."""
import pytest

from fastconv.bench import suites

ENTRIES = suites.select(suites.load_layers(), "cpu_smoke", ops=["batch_norm_relu"])


@pytest.mark.parametrize("pass_name", ["fwd", "fwd_bwd", "infer"])
@pytest.mark.parametrize("impl", ["fastconv", "torch"])
@pytest.mark.parametrize("memory_format", ["contiguous", "channels_last"])
@pytest.mark.parametrize("entry", ENTRIES, ids=[e["id"] for e in ENTRIES])
def test_batch_norm_relu(bench_pass, entry, memory_format, impl, pass_name):
    bench_pass(entry, memory_format, impl, pass_name)
