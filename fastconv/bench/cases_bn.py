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
"""
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
            fails += close_but_mask_flips("grad_input", fwd_bwd(fc)(), fwd_bwd(pt)())
            return fails

        e = x.element_size()
        m = n * c * h * w
        extra = 1 if residual_layer else 0
        with_grad = fwd_bwd(fc), fwd_bwd(pt)
        return Case(
            entry=entry, op=self.op, shape=self.describe(entry, n), batch=n,
            memory_format=memory_format, dtype=dtype, device=device, bound=self.bound,
            passes=[
                Pass("fwd", lambda: fc(x, True), lambda: pt(x, True), e * m * (3 + extra)),
                Pass("fwd_bwd", with_grad[0], with_grad[1], e * m * (8 + 3 * extra)),
                Pass("infer", lambda: fc(x, False), lambda: pt(x, False), e * m * (2 + extra)),
            ],
            check=check,
            working_set_bytes=e * m * (4 + extra),
        )
