"""fastconv's benchmark runner (`python -m fastconv.bench`, `fastconv-bench`).

Modules: suites (layers.json and suite selection), cases (one case builder per op: inputs,
fastconv and PyTorch callables per pass, correctness check, work and traffic), limits (the
machine's FMA peak and copy bandwidth), timing (interleaved torch.utils.benchmark runs) and
report (table, JSON, PNG). The pytest-benchmark suite in benchmarks/ reuses the same cases.
"""
from .cases import REGISTRY, Case, CaseBuilder, Pass, build_case, register, skip_reason
from .suites import load_layers, select

__all__ = ["REGISTRY", "Case", "CaseBuilder", "Pass", "build_case", "register", "skip_reason",
           "load_layers", "select"]
