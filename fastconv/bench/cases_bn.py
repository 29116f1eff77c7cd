"""Benchmark cases of the bn_relu suite (layers.json op "batch_norm_relu"): fastconv's fused
BatchNorm+ReLU against PyTorch eager BatchNorm followed by an in-place ReLU (as torchvision's
ResNet runs it). Entries with count_relu == 0 are ResNet's "BN, residual add, ReLU" layers and
run batch_norm_add_relu against BN + in-place add + in-place ReLU.

Passes, with the minimal traffic in passes of e*M bytes (M = N*C*H*W; shared/bench/README.md;
a residual adds one read per pass that reads x, and the gradient pass one write):
  fwd      training forward            3: read x (statistics), read x + write y
  fwd_bwd  training forward + backward 8: the 3 above + reduce (read dy, x) + apply (read dy,
                                          x, write dx)
  infer    inference forward           2: read x, write y

Second reference, torch.compile of the PyTorch version (issue 6): with FASTCONV_BENCH_COMPILE=all
(or a comma-separated list of entry ids) each entry also gets the passes fwd@compile,
fwd_bwd@compile and infer@compile, whose "PyTorch" side is torch.compile (inductor, static
shapes) of the same BN [+ add] + ReLU code, compiled when the case is built (outside the
timing; the first-call cost is printed). Off by default: inductor compiles each shape and pass
for 20-90 s on 2 busy cores, which would make the suite take hours. When inductor cannot
compile here, those rows report the error instead of a time.
"""
import os
import sys
import time

import torch
import torch.nn.functional as F

from fastconv.bench.cases import Case, CaseBuilder, Pass, compare, make_input, register


@register
class BatchNormReLU(CaseBuilder):
    op = "batch_norm_relu"
    fastconv_name = "fastconv.nn.functional:batch_norm_add_relu"
    bound = "memory"

    @classmethod
    def describe(cls, entry, n):
        text = f"{n}x{entry['c']}x{entry['h']}x{entry['w']}"
        return text + (" +relu" if entry.get("count_relu") else " +add+relu")

    def build(self, entry, *, dtype, device, memory_format):
        import fastconv.nn.functional as FC
        n = self.batch(entry, device)
        c, h, w = entry["c"], entry["h"], entry["w"]
        residual_layer = not entry.get("count_relu")
        x = make_input((n, c, h, w), dtype, device, memory_format)
        r = make_input((n, c, h, w), dtype, device, memory_format) if residual_layer else None
        grad = make_input((n, c, h, w), dtype, device, memory_format)
        stats = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
        weight = torch.rand(c, dtype=stats, device=device) + 0.5
        bias = torch.randn(c, dtype=stats, device=device) * 0.1
        buffers = {side: (torch.zeros(c, dtype=stats, device=device),
                          torch.ones(c, dtype=stats, device=device)) for side in ("fc", "pt")}

        def fc(t, training, side="fc"):
            rm, rv = buffers[side]
            if r is None:
                return FC.batch_norm_relu(t, rm, rv, weight, bias, training)
            return FC.batch_norm_add_relu(t, r, rm, rv, weight, bias, training)

        def pt(t, training, side="pt"):
            rm, rv = buffers[side]
            y = F.batch_norm(t, rm, rv, weight, bias, training)
            if r is not None:
                y += r
            return torch.relu_(y)

        def fwd_bwd(fn):
            xg = x.detach().requires_grad_(True)

            def run():
                return torch.autograd.grad(fn(xg, True), xg, grad)[0]
            return run

        def close_but_mask_flips(name, a, b):
            # Where a pre-activation is within rounding of 0 the two sides may disagree on the
            # ReLU mask (dy vs 0 in grad_input, a tiny value vs 0 in the output): both are right.
            # Anything beyond 1 element in 10^4 is a real difference.
            bad = ~torch.isclose(a.float(), b.float(), rtol=1e-4, atol=1e-4)
            frac = bad.float().mean().item()
            return [f"{name}: {bad.sum().item()} of {a.numel()} elements differ"] if frac > 1e-4 else []

        def check():
            # rtol 1e-4: PyTorch's channels_last CPU statistics carry ~1e-5 relative variance
            # error over 10^5 values per channel (fastconv's: ~1e-7 against float64)
            with torch.no_grad():
                fails = close_but_mask_flips("train output", fc(x, True, "fc"), pt(x, True, "pt"))
                fails += compare("running_var", buffers["fc"][1], buffers["pt"][1], rtol=1e-4,
                                 atol=1e-5)
                fails += compare("eval output", fc(x, False), pt(x, False))
            ours = fwd_bwd(fc)()
            mismatch = close_but_mask_flips("grad_input", ours, fwd_bwd(pt)())
            if mismatch:
                # PyTorch's channels_last CPU backward now and then returns a few channels off
                # by up to ~1 (torch 2.14, 2 threads, [8,256,56,56]; fastconv stays within 1e-6
                # of float64 there): a float64 reference decides who is wrong
                print(f"  note: {mismatch[0]} from PyTorch's; checking against float64",
                      file=sys.stderr, flush=True)
                fails += close_but_mask_flips("grad_input vs float64", ours, grad_input_float64())
            return fails

        def grad_input_float64():
            xd = x.double().requires_grad_(True)
            stats64 = torch.zeros(c, dtype=torch.float64, device=device)
            y = F.batch_norm(xd, stats64, stats64 + 1, weight.double(), bias.double(), True)
            if r is not None:
                y = y + r.double()
            return torch.autograd.grad(torch.relu(y), xd, grad.double())[0]

        e = x.element_size()
        m = n * c * h * w
        extra = 1 if residual_layer else 0
        with_grad = fwd_bwd(fc), fwd_bwd(pt)
        passes = [
            Pass("fwd", lambda: fc(x, True), lambda: pt(x, True), e * m * (3 + extra)),
            Pass("fwd_bwd", with_grad[0], with_grad[1], e * m * (8 + 3 * extra)),
            Pass("infer", lambda: fc(x, False), lambda: pt(x, False), e * m * (2 + extra)),
        ]
        if compile_reference_wanted(entry["id"]):
            passes += compiled_reference_passes(passes, pt, x, grad, buffers, fwd_bwd)
        return Case(
            entry=entry, op=self.op, shape=self.describe(entry, n), batch=n,
            memory_format=memory_format, dtype=dtype, device=device, bound=self.bound,
            passes=passes,
            check=check,
            working_set_bytes=e * m * (4 + extra),
        )


def compile_reference_wanted(entry_id):
    wanted = os.environ.get("FASTCONV_BENCH_COMPILE", "")
    return wanted == "all" or entry_id in wanted.split(",")


def compiled_reference_passes(passes, pt, x, grad, buffers, fwd_bwd):
    """fwd@compile, fwd_bwd@compile, infer@compile: fastconv against torch.compile of `pt`,
    compiled here (static shapes, one graph per pass); a failure becomes a row error."""
    import torch._dynamo
    # every entry and pass compiles the same Python code again for its own shapes
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 1024)
    buffers["pc"] = tuple(t.clone() for t in buffers["pt"])
    compiled = torch.compile(pt, dynamic=False)
    torch_sides = {
        "fwd": lambda: compiled(x, True, "pc"),
        "fwd_bwd": fwd_bwd(lambda t, training: compiled(t, training, "pc")),
        "infer": lambda: compiled(x, False, "pc"),
    }
    result = []
    for p in passes:
        run = torch_sides[p.name]
        start = time.perf_counter()
        try:
            run()  # compiles (in the grad mode of the timed calls: Dynamo guards on it)
            print(f"  torch.compile {p.name}: first call {time.perf_counter() - start:.1f} s",
                  file=sys.stderr, flush=True)
        except Exception as error:  # inductor's C++ build unavailable or failing here
            message = f"torch.compile failed: {type(error).__name__}: {str(error)[:200]}"

            def run(message=message):
                raise RuntimeError(message)
        result.append(Pass(f"{p.name}@compile", p.fastconv, run, p.bytes, p.flops))
    return result
