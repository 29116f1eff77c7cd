"""Whole models, fastconv.nn.convert vs torch.nn: the cpu_smoke model entries (resnet18 and
resnet50 at 2x3x112x112), both memory formats, a training step and an inference step
(cases from fastconv.bench.cases_models)."""
import pytest

from fastconv.bench import suites

ENTRIES = suites.select(suites.load_layers(), "cpu_smoke", ops=["model"])


@pytest.mark.parametrize("pass_name", ["train", "infer"])
@pytest.mark.parametrize("impl", ["fastconv", "torch"])
@pytest.mark.parametrize("memory_format", ["contiguous", "channels_last"])
@pytest.mark.parametrize("entry", ENTRIES, ids=[e["id"] for e in ENTRIES])
def test_model(bench_pass, entry, memory_format, impl, pass_name):
    bench_pass(entry, memory_format, impl, pass_name)
