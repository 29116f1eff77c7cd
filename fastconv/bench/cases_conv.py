"""Benchmark cases of the convolution family: conv2d and conv_transpose2d entries of
layers.json, each timed as three passes reported separately: fwd (forward), dgrad (input
gradient) and wgrad (weight gradient). Both sides get the same tensors, in the memory format
under test (weight included, as `model.to(memory_format=...)` leaves it): fastconv's public
forward and its gradient ops against F.conv2d / F.conv_transpose2d and
torch.ops.aten.convolution_backward with an output_mask asking for the one gradient. The
weight gradient is returned in the weight's memory format on both sides (fastconv's op gives
the activations' one, which is the weight's here; a conversion, as its autograd would do it,
would be charged to fastconv).
Entries with `input_grad: false` (first layers) have no dgrad pass, like the references.
"""
import torch
import torch.nn.functional as F

from .cases import Case, CaseBuilder, Pass, compare, make_input, register, sum_tolerance

_aten = torch.ops.aten


def _pair(t):
    return f"{t[0]}" if t[0] == t[1] else f"{t[0]}x{t[1]}"


def conv_output_size(size, kernel, stride, pad, dilation):
    """README: P = floor((H + 2 pad - dil (R - 1) - 1) / stride) + 1."""
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def _weight_format(weight):
    cl = weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


class _ConvBuilder(CaseBuilder):
    bound = "compute"
    transposed = False

    @classmethod
    def geometry(cls, entry):
        return dict(stride=list(entry["stride"]), padding=list(entry["pad"]),
                    dilation=list(entry["dilation"]), groups=int(entry["groups"]))

    @classmethod
    def describe(cls, entry, n):
        s = (f"{n}x{entry['c']}x{entry['h']}x{entry['w']} k{entry['k']} r{entry['r']}x"
             f"{entry['s']} s{_pair(entry['stride'])} p{_pair(entry['pad'])}")
        if list(entry["dilation"]) != [1, 1]:
            s += f" d{_pair(entry['dilation'])}"
        if entry["groups"] != 1:
            s += f" g{entry['groups']}"
        if cls.transposed and list(entry.get("output_padding", [0, 0])) != [0, 0]:
            s += f" op{_pair(entry['output_padding'])}"
        return s

    def build(self, entry, *, dtype, device, memory_format):
        n = self.batch(entry, device)
        geo = self.geometry(entry)
        c, h, w, k, groups = entry["c"], entry["h"], entry["w"], entry["k"], geo["groups"]
        if self.transposed:  # weight (C_in, C_out / groups, R, S); input is (N, C_in, H, W)
            w_shape = (c, k // groups, entry["r"], entry["s"])
        else:
            w_shape = (k, c // groups, entry["r"], entry["s"])
        x = make_input((n, c, h, w), dtype, device, memory_format)
        weight = make_input(w_shape, dtype, device, memory_format)
        sides = self.sides(x, weight, geo, entry)
        with torch.no_grad():
            ref_out = sides["torch"]["fwd"]()
        grad = make_input(tuple(ref_out.shape), dtype, device, memory_format)
        sides = self.sides(x, weight, geo, entry, grad)

        # Work: 2 * MACs of the underlying convolution (the same for all three passes);
        # traffic: each of input, weight and output (or their gradients) touched once.
        big_in, big_out = (ref_out, x) if self.transposed else (x, ref_out)
        conv_c, conv_k = big_in.shape[1], big_out.shape[1]
        macs = (n * conv_k * big_out.shape[2] * big_out.shape[3] * (conv_c // groups)
                * entry["r"] * entry["s"])
        e = x.element_size()
        nbytes = e * (x.numel() + weight.numel() + ref_out.numel())
        names = ["fwd", "dgrad", "wgrad"] if entry.get("input_grad", True) else ["fwd", "wgrad"]
        passes = [Pass(p, sides["fastconv"][p], sides["torch"][p], nbytes, 2 * macs)
                  for p in names]
        # sums per element: forward and dgrad reduce over (C/groups) R S or (K/groups) R S,
        # wgrad over N P Q; tolerance from the worst-case rounding bound (sum_tolerance)
        terms = {"fwd": conv_c // groups * entry["r"] * entry["s"],
                 "dgrad": conv_k // groups * entry["r"] * entry["s"],
                 "wgrad": n * big_out.shape[2] * big_out.shape[3]}
        if self.transposed:
            terms["fwd"], terms["dgrad"] = terms["dgrad"], terms["fwd"]
        scale = {"fwd": x.abs().max() * weight.abs().max(),
                 "dgrad": grad.abs().max() * weight.abs().max(),
                 "wgrad": grad.abs().max() * x.abs().max()}

        def check():
            fails = []
            for p in names:
                with torch.no_grad():
                    ours, ref = sides["fastconv"][p](), sides["torch"][p]()
                rtol, atol = sum_tolerance(dtype, terms[p], scale[p])
                fails += compare(p, ours, ref, rtol=rtol, atol=atol)
            return fails

        return Case(entry=entry, op=self.op, shape=self.describe(entry, n), batch=n,
                    memory_format=memory_format, dtype=dtype, device=device, bound=self.bound,
                    passes=passes, check=check, working_set_bytes=nbytes)


@register
class Conv2d(_ConvBuilder):
    op = "conv2d"
    fastconv_name = "fastconv.nn.functional:conv2d"

    def sides(self, x, weight, geo, entry, grad=None):
        fc = self.fastconv_fn()
        ops = torch.ops.fastconv
        wfmt = _weight_format(weight)
        args = (geo["stride"], geo["padding"], geo["dilation"], geo["groups"])
        bw = (geo["stride"], geo["padding"], geo["dilation"], False, [0, 0], geo["groups"])
        return {
            "fastconv": {
                "fwd": lambda: fc(x, weight, None, *args),
                "dgrad": lambda: ops._conv2d_input_grad(grad, weight, list(x.shape), *args),
                "wgrad": lambda: ops._conv2d_weight_grad(
                    grad, x, list(weight.shape), *args).contiguous(memory_format=wfmt),
            },
            "torch": {
                "fwd": lambda: F.conv2d(x, weight, None, *args),
                "dgrad": lambda: _aten.convolution_backward(grad, x, weight, None, *bw,
                                                            [True, False, False])[0],
                "wgrad": lambda: _aten.convolution_backward(grad, x, weight, None, *bw,
                                                            [False, True, False])[1],
            },
        }


@register
class ConvTranspose2d(_ConvBuilder):
    op = "conv_transpose2d"
    fastconv_name = "fastconv.nn.functional:conv_transpose2d"
    transposed = True

    def sides(self, x, weight, geo, entry, grad=None):
        fc = self.fastconv_fn()
        ops = torch.ops.fastconv
        wfmt = _weight_format(weight)
        out_pad = list(entry.get("output_padding", [0, 0]))
        s, p, d, g = geo["stride"], geo["padding"], geo["dilation"], geo["groups"]
        bw = (s, p, d, True, out_pad, g)
        return {
            "fastconv": {
                "fwd": lambda: fc(x, weight, None, s, p, out_pad, g, d),
                # the transposed conv's input gradient is a conv2d of its output gradient,
                # its weight gradient the conv2d weight gradient with the roles swapped
                "dgrad": lambda: ops.conv2d(grad, weight, None, s, p, d, g),
                "wgrad": lambda: ops._conv2d_weight_grad(
                    x, grad, list(weight.shape), s, p, d, g).contiguous(memory_format=wfmt),
            },
            "torch": {
                "fwd": lambda: F.conv_transpose2d(x, weight, None, s, p, out_pad, g, d),
                "dgrad": lambda: _aten.convolution_backward(grad, x, weight, None, *bw,
                                                            [True, False, False])[0],
                "wgrad": lambda: _aten.convolution_backward(grad, x, weight, None, *bw,
                                                            [False, True, False])[1],
            },
        }
