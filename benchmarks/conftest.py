"""pytest-benchmark suites over the fastconv.bench cases.

Run with `pytest benchmarks/` (pyproject's testpaths is tests/, so `pytest` and
`pytest tests/` never collect these). Each test times one callable of one pass of one case;
pytest-benchmark groups the fastconv and PyTorch sides of a pass together, so its table
shows them next to each other. The cases are the ones `python -m fastconv.bench` runs, so
both report the same work on the same tensors; a case that fails its check is not timed.
A new op's file parametrizes over its entries (fastconv.bench.suites.select) and calls the
bench_pass fixture, as test_maxpool.py does.
"""
import pytest
import torch

from fastconv.bench import cases

_cases = {}  # (id, format, dtype, device) -> checked Case, shared by its passes and sides


def checked_case(entry, memory_format, dtype=torch.float32, device="cpu"):
    reason = cases.skip_reason(entry)
    if reason:
        pytest.skip(reason)
    key = (entry["id"], memory_format, dtype, device)
    if key not in _cases:
        torch.manual_seed(0)
        case = cases.build_case(entry, dtype=dtype, device=device, memory_format=memory_format)
        failures = case.check()
        _cases[key] = (case, failures)
    case, failures = _cases[key]
    if failures:
        pytest.fail("check failed, not timed: " + "; ".join(failures))
    return case


@pytest.fixture
def bench_pass(benchmark):
    """bench_pass(entry, memory_format, impl, pass_name): time one side of one pass."""
    def run(entry, memory_format, impl, pass_name, dtype=torch.float32, device="cpu"):
        case = checked_case(entry, memory_format, dtype, device)
        p = next(p for p in case.passes if p.name == pass_name)
        benchmark.group = f"{entry['id']} {memory_format} {pass_name}"
        benchmark.extra_info.update(shape=case.shape, bytes=p.bytes, flops=p.flops,
                                    threads=torch.get_num_threads())
        fn = p.fastconv if impl == "fastconv" else p.torch
        if device == "cuda":
            def fn(f=fn):  # pytest-benchmark reads the host clock: wait for the GPU
                f()
                torch.cuda.synchronize()
        benchmark(fn)
    return run


def pytest_sessionfinish(session, exitstatus):
    _cases.clear()
