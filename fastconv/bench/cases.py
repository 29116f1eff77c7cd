"""Benchmark cases: one case builder per op name of layers.json.

A builder turns an entry into a Case: input tensors, the fastconv and PyTorch callables for
each pass (fwd, bwd, ...), a correctness check, and the work and traffic of each pass as
counted in shared/bench/README.md ("Counting work and traffic"). Adding an op to the
benchmark means writing one builder class and decorating it with @register; entries whose
op has no builder, or whose fastconv function does not exist yet, are reported as skipped.
"""
import importlib
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


@dataclass
class Pass:
    """One timed pass: both callables do the same work on the same tensors."""
    name: str
    fastconv: Callable[[], object]
    torch: Callable[[], object]
    bytes: int            # minimum traffic, every tensor touched once
    flops: int = 0        # useful FLOPs (0 for memory-bound ops)


@dataclass
class Case:
    entry: dict
    op: str
    shape: str            # human-readable problem, e.g. "8x64x112x112 k3x3 s2 p1"
    batch: int
    memory_format: str
    dtype: torch.dtype
    device: str
    bound: str            # "memory" or "compute": which limit "% of limit" divides by
    passes: List[Pass]
    check: Callable[[], List[str]]   # failure messages; empty means both sides agree
    working_set_bytes: int = 0       # all tensors of one call (does it stay in cache?)
    extra: dict = field(default_factory=dict)  # more results for every row (e.g. memory)


class CaseBuilder:
    """Base class: subclasses set `op`, `fastconv_name` and `bound`, and implement build()."""
    op = ""
    fastconv_name = ""    # "module:attribute" of the public fastconv function
    bound = "memory"

    def fastconv_fn(self):
        """The fastconv function, or None while it does not exist (not implemented yet)."""
        module, _, attr = self.fastconv_name.partition(":")
        try:
            return getattr(importlib.import_module(module), attr, None)
        except ImportError:
            return None

    def missing_reason(self):
        module, _, attr = self.fastconv_name.partition(":")
        try:
            found = hasattr(importlib.import_module(module), attr)
        except ImportError as e:  # a broken build is not "not implemented yet": say why
            return f"cannot import {module}: {e}"
        return None if found else f"not implemented yet ({module}.{attr} missing)"

    @staticmethod
    def batch(entry, device):
        # CPU runs use the smaller batch chosen to keep one call around 2 GFLOP / 32 MB.
        return entry["n_cpu"] if device == "cpu" else entry["n"]

    @classmethod
    def describe(cls, entry, n):
        """The problem as text for the table; builders add their op's parameters."""
        dims = "x".join(str(entry[k]) for k in ("c", "h", "w") if k in entry)
        return f"{n}x{dims}" if dims else str(n)

    def build(self, entry, *, dtype, device, memory_format) -> Case:
        raise NotImplementedError


REGISTRY: Dict[str, CaseBuilder] = {}


def register(cls):
    """Class decorator: make `cls` the builder for entries with op == cls.op."""
    REGISTRY[cls.op] = cls()
    return cls


def has_builder(op):
    return op in REGISTRY


def skip_reason(entry) -> Optional[str]:
    """Why an entry cannot run yet, or None when it can."""
    builder = REGISTRY.get(entry["op"])
    if builder is None:
        return f"not implemented yet (no case builder for {entry['op']})"
    return builder.missing_reason()


def describe(entry, device):
    """Table text for an entry, also for ops without a builder."""
    builder = REGISTRY.get(entry["op"], CaseBuilder)
    return builder.describe(entry, CaseBuilder.batch(entry, device))


def build_case(entry, *, dtype=torch.float32, device="cpu", memory_format="contiguous") -> Case:
    return REGISTRY[entry["op"]].build(entry, dtype=dtype, device=device,
                                       memory_format=memory_format)


# ---- shared helpers --------------------------------------------------------------------

def make_input(shape, dtype, device, memory_format):
    """Normal random input in the requested memory format (generated in fp32 so every dtype
    sees the same distribution)."""
    x = torch.randn(shape, dtype=torch.float32, device=device).to(dtype)
    return x.contiguous(memory_format=MEMORY_FORMATS[memory_format])


def grad_fn_of(fn, x, grad):
    """A closure that runs only the backward of fn(x)[0] for the given output gradient.

    The graph is recorded once and kept (retain_graph), so timing the closure measures the
    backward kernel plus the autograd engine's fixed cost, as a training step pays it (on
    fastconv's side that includes its Python-registered backward function).
    """
    xg = x.detach().requires_grad_(True)
    out = fn(xg)
    out = out[0] if isinstance(out, (tuple, list)) else out

    def run():
        return torch.autograd.grad(out, xg, grad, retain_graph=True)[0]
    return run


def sum_tolerance(dtype, terms, scale):
    """(rtol, atol) for results that are sums of up to `terms` values of magnitude <= scale:
    rounding in a different order can move each by ~terms * eps * scale, which for fp16 and
    bf16 is far beyond torch.testing's defaults; never tighter than those defaults."""
    rtol0, atol0 = {torch.float16: (1e-3, 1e-5), torch.bfloat16: (1.6e-2, 1e-5),
                    torch.float32: (1.3e-6, 1e-5), torch.float64: (1e-7, 1e-7)}[dtype]
    bound = terms * torch.finfo(dtype).eps
    return max(rtol0, bound), max(atol0, bound * float(scale))


def compare(name, actual, expected, exact=False, rtol=None, atol=None):
    """Failure messages comparing two tensors (shape, memory format, then values)."""
    if actual.shape != expected.shape:
        return [f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"]
    fails = []
    cl = [t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
          for t in (actual, expected)]
    if actual.dim() == 4 and cl[0] != cl[1]:
        fails.append(f"{name}: memory format differs from PyTorch's (channels_last "
                     f"{cl[0]} vs {cl[1]}), so the timings would not compare like with like")
    if actual.dtype != expected.dtype:
        return fails + [f"{name}: dtype {actual.dtype} != {expected.dtype}"]
    if exact:
        if not torch.equal(actual, expected):
            bad = (actual != expected).sum().item()
            fails.append(f"{name}: {bad} of {actual.numel()} elements differ")
    else:
        try:  # default tolerances of torch.testing for the dtype unless given
            torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)
        except AssertionError as e:
            lines = [s.strip() for s in str(e).splitlines() if s.strip()]
            fails.append(f"{name}: " + "; ".join(lines[:3]))
    return fails


def pool_output_size(size, kernel, stride, pad, dilation, ceil_mode):
    """PyTorch's pooling output size (README formula, plus its ceil_mode rule)."""
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1  # the last window must start inside the input or left padding
    return out


# ---- max_pool2d ------------------------------------------------------------------------

def max_pool2d_bytes(n, c, h, w, p, q, e):
    """README: forward e*N*C*H*W + (e+8)*N*C*P*Q (the 8 is the int64 index); backward reads
    (e+8)*N*C*P*Q and writes e*N*C*H*W (minimum: dx not zeroed first)."""
    fwd = e * n * c * h * w + (e + 8) * n * c * p * q
    bwd = (e + 8) * n * c * p * q + e * n * c * h * w
    return {"fwd": fwd, "bwd": bwd}


@register
class MaxPool2d(CaseBuilder):
    op = "max_pool2d"
    fastconv_name = "fastconv.nn.functional:max_pool2d_with_indices"
    bound = "memory"

    @staticmethod
    def geometry(entry):
        return dict(kernel_size=tuple(entry["kernel"]), stride=tuple(entry["stride"]),
                    padding=tuple(entry["pad"]), dilation=tuple(entry["dilation"]),
                    ceil_mode=bool(entry["ceil_mode"]))

    @classmethod
    def output_hw(cls, entry):
        g = cls.geometry(entry)
        return tuple(pool_output_size(entry[d], g["kernel_size"][i], g["stride"][i],
                                      g["padding"][i], g["dilation"][i], g["ceil_mode"])
                     for i, d in enumerate(("h", "w")))

    @classmethod
    def describe(cls, entry, n):
        g = cls.geometry(entry)
        pair = lambda t: f"{t[0]}" if t[0] == t[1] else f"{t[0]}x{t[1]}"  # noqa: E731
        s = (f"{n}x{entry['c']}x{entry['h']}x{entry['w']} k{g['kernel_size'][0]}x"
             f"{g['kernel_size'][1]} s{pair(g['stride'])} p{pair(g['padding'])}")
        if g["dilation"] != (1, 1):
            s += f" d{pair(g['dilation'])}"
        return s + (" ceil" if g["ceil_mode"] else "")

    def build(self, entry, *, dtype, device, memory_format):
        n = self.batch(entry, device)
        c, h, w = entry["c"], entry["h"], entry["w"]
        g = self.geometry(entry)
        fc_op = self.fastconv_fn()
        pt_op = F.max_pool2d_with_indices
        fc = lambda t: fc_op(t, **g)  # noqa: E731
        pt = lambda t: pt_op(t, **g)  # noqa: E731

        # One input for both sides, in the memory format under test. The output gradient
        # takes the reference output's layout (like an upstream layer would produce it).
        x = make_input((n, c, h, w), dtype, device, memory_format)
        with torch.no_grad():
            ref_out, _ = pt(x)
        grad = torch.randn_like(ref_out, dtype=torch.float32).to(dtype)
        del ref_out
        bwd_fc, bwd_pt = grad_fn_of(fc, x, grad), grad_fn_of(pt, x, grad)

        p, q = self.output_hw(entry)
        e = x.element_size()
        # most windows that share one input pixel: the number of terms in a grad_input sum
        (kh, kw), (sh, sw) = g["kernel_size"], g["stride"]
        overlap = (kh * kw if g["dilation"] != (1, 1)
                   else math.ceil(kh / sh) * math.ceil(kw / sw))
        traffic = max_pool2d_bytes(n, c, h, w, p, q, e)

        def check():
            # Max-pool picks existing values, so values and indices must match exactly
            # (both break ties on the first maximum in window order); gradients are sums
            # and only need to be close.
            with torch.no_grad():
                out_f, idx_f = fc(x)
                out_t, idx_t = pt(x)
            fails = compare("output", out_f, out_t, exact=True)
            fails += compare("indices", idx_f, idx_t, exact=True)
            if not fails:
                rtol, atol = sum_tolerance(dtype, overlap, grad.abs().max())
                fails += compare("grad_input", bwd_fc(), bwd_pt(), rtol=rtol, atol=atol)
            return fails

        return Case(
            entry=entry, op=self.op, shape=self.describe(entry, n), batch=n,
            memory_format=memory_format, dtype=dtype, device=device, bound=self.bound,
            passes=[
                Pass("fwd", lambda: fc(x), lambda: pt(x), traffic["fwd"]),
                Pass("bwd", bwd_fc, bwd_pt, traffic["bwd"]),
            ],
            check=check,
            # input, output, indices and output gradient: what a pass touches at most
            working_set_bytes=e * n * c * h * w + (2 * e + 8) * n * c * p * q,
        )


from . import cases_conv  # noqa: E402,F401  (registers conv2d and conv_transpose2d)
from fastconv.bench import cases_roi  # noqa: E402,F401  (registers the roi_align/roi_pool builders)
from fastconv.bench import cases_models  # noqa: E402,F401  (whole models: op `model`)
# Case builders of other op families, in their own modules (registered on import).
from fastconv.bench import cases_bn  # noqa: E402,F401
