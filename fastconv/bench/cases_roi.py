"""Benchmark cases of the ROI family (layers.json ops roi_align and roi_pool): fastconv.ops
against torchvision.ops on the same feature map (same memory format) and the same boxes.

Passes: "fwd" (the forward) and "fwd+bwd" (forward and input gradient in one call, as a
training step runs them). Traffic as shared/bench/README.md counts it: forward e*K*C*PH*PW
written + e*N*C*H*W read + 20 B per box (+4 B argmax per output for roi_pool); backward reads
dy (and argmax) and writes dx = e*N*C*H*W.
"""
import torch

from fastconv.bench.cases import Case, CaseBuilder, Pass, compare, make_input, register


def make_boxes(entry, n, num_rois, dtype, device, generator):
    """num_rois boxes spread evenly over n images, sides uniform in box_px (image pixels),
    placed uniformly inside the image (image size = feature size / spatial_scale)."""
    scale = entry["spatial_scale"]
    img_h, img_w = entry["h"] / scale, entry["w"] / scale
    lo, hi = entry["box_px"]
    sides = torch.rand(num_rois, 2, generator=generator) * (hi - lo) + lo
    sides = torch.minimum(sides, torch.tensor([img_w - 1, img_h - 1]))
    corner = torch.rand(num_rois, 2, generator=generator) * (torch.tensor([img_w, img_h]) - sides)
    batch = (torch.arange(num_rois) * n // num_rois).unsqueeze(1).float()
    rois = torch.cat([batch, corner, corner + sides], dim=1)
    return rois.to(dtype=dtype, device=device)


def roi_bytes(e, n, c, h, w, k, ph, pw, argmax_bytes=0):
    outputs = k * c * ph * pw
    fwd = e * outputs + e * n * c * h * w + 20 * k + argmax_bytes * outputs
    bwd = (e + argmax_bytes) * outputs + e * n * c * h * w
    return {"fwd": fwd, "fwd+bwd": fwd + bwd}


class _RoiBuilder(CaseBuilder):
    bound = "memory"

    @staticmethod
    def num_rois(entry, device):
        return entry["num_rois_cpu"] if device == "cpu" else entry["num_rois"]

    @classmethod
    def describe(cls, entry, n):
        ph, pw = entry["output_size"]
        s = (f"{n}x{entry['c']}x{entry['h']}x{entry['w']} {entry['num_rois_cpu']}/"
             f"{entry['num_rois']} rois {ph}x{pw} 1/{round(1 / entry['spatial_scale'])}")
        if entry.get("sampling_ratio") is not None:
            s += f" sr{entry['sampling_ratio']}" + (" aligned" if entry["aligned"] else "")
        return s

    def functions(self, entry):
        raise NotImplementedError

    def build(self, entry, *, dtype, device, memory_format):
        n = self.batch(entry, device)
        k = self.num_rois(entry, device)
        c, h, w = entry["c"], entry["h"], entry["w"]
        ph, pw = entry["output_size"]
        generator = torch.Generator().manual_seed(0)
        x = make_input((n, c, h, w), dtype, device, memory_format)
        rois = make_boxes(entry, n, k, dtype, device, generator)
        fc, pt = self.functions(entry)
        grad = torch.randn(k, c, ph, pw, dtype=torch.float32, device=device).to(dtype)

        def step(fn):
            def run():
                xg = x.detach().requires_grad_(True)
                return torch.autograd.grad(fn(xg, rois), xg, grad)[0]
            return run

        e = x.element_size()
        traffic = roi_bytes(e, n, c, h, w, k, ph, pw, 4 if self.op == "roi_pool" else 0)

        def check():
            # torchvision returns NCHW outputs even for channels_last maps (fastconv keeps
            # the input's format), so values are compared in one layout
            with torch.no_grad():
                fails = compare("output", fc(x, rois).contiguous(), pt(x, rois).contiguous(),
                                exact=self.op == "roi_pool")
            if not fails:
                # gradient sums over many bins in another order: see tests/test_roi_align.py
                fails += compare("grad_input", step(fc)().contiguous(), step(pt)().contiguous(),
                                 rtol=1e-4, atol=1e-4)
            return fails

        return Case(
            entry=entry, op=self.op, shape=self.describe(entry, n), batch=n,
            memory_format=memory_format, dtype=dtype, device=device, bound=self.bound,
            passes=[Pass("fwd", lambda: fc(x, rois), lambda: pt(x, rois), traffic["fwd"]),
                    Pass("fwd+bwd", step(fc), step(pt), traffic["fwd+bwd"])],
            check=check,
            working_set_bytes=e * n * c * h * w + 2 * e * k * c * ph * pw,
        )


@register
class RoiAlign(_RoiBuilder):
    op = "roi_align"
    fastconv_name = "fastconv.ops:roi_align"

    def functions(self, entry):
        import torchvision

        from fastconv.ops import roi_align
        args = (tuple(entry["output_size"]), entry["spatial_scale"], entry["sampling_ratio"],
                entry["aligned"])
        return (lambda t, r: roi_align(t, r, *args),
                lambda t, r: torchvision.ops.roi_align(t, r, *args))


@register
class RoiPool(_RoiBuilder):
    op = "roi_pool"
    fastconv_name = "fastconv.ops:roi_pool"

    def functions(self, entry):
        import torchvision

        from fastconv.ops import roi_pool
        args = (tuple(entry["output_size"]), entry["spatial_scale"])
        return (lambda t, r: roi_pool(t, r, *args),
                lambda t, r: torchvision.ops.roi_pool(t, r, *args))
