"""The CPU BatchNorm kernels write outputs larger than half the last-level cache with
non-temporal stores (through an L1 buffer, plain stores for the unaligned ends). Tests use small
tensors, which never take that path; here a subprocess forces it for every output
(FASTCONV_BN_STREAM_BYTES=0, read once per process) and must produce the same bits as this
process (whose own results the other test files check against PyTorch and float64), on shapes
whose runs and rows start at unaligned addresses, for both schedules
(chunk-parallel with few channels, channel-fused with many), both layouts, with and without a
residual and its gradient, in training and in eval, in fp32, fp64 and bf16."""
import os
import subprocess
import sys

import torch

import fastconv.nn.functional as F

SHAPES = [(3, 5, 7, 9), (2, 16, 5, 7), (37, 6)]  # 63-value planes / 5-channel rows; fused; (N, C)


def outputs():
    """Every output and gradient of the family's CPU kernels on the cases above."""
    gen = torch.Generator().manual_seed(0)
    out = {}
    for shape in SHAPES:
        formats = [torch.contiguous_format] + ([torch.channels_last] if len(shape) == 4 else [])
        for fmt in formats:
            for dtype in (torch.float32, torch.float64, torch.bfloat16):
                stats = torch.float64 if dtype == torch.float64 else torch.float32
                c = shape[1]

                def make(*size, dt=dtype):
                    return torch.randn(size, generator=gen).to(dt)

                x = make(*shape).contiguous(memory_format=fmt).requires_grad_()
                r = make(*shape).contiguous(memory_format=fmt).requires_grad_()
                dy = make(*shape).contiguous(memory_format=fmt)
                w = (torch.rand(c, generator=gen) + 0.5).to(stats).requires_grad_()
                b = make(c, dt=stats).requires_grad_()
                for residual in (None, r):
                    for training in (True, False):
                        rm, rv = torch.zeros(c, dtype=stats), torch.ones(c, dtype=stats)
                        if residual is None:
                            y = F.batch_norm_relu(x, rm, rv, w, b, training)
                        else:
                            y = F.batch_norm_add_relu(x, residual, rm, rv, w, b, training)
                        inputs = [x, w, b] + ([residual] if residual is not None else [])
                        grads = torch.autograd.grad(y, inputs, dy)
                        key = f"{shape}-{fmt}-{dtype}-{residual is not None}-{training}"
                        out[key] = [y.detach(), rm, rv, *grads]
    return out


def test_streamed_outputs_are_bit_identical(tmp_path):
    path = tmp_path / "streamed.pt"
    env = dict(os.environ, FASTCONV_BN_STREAM_BYTES="0",
               PYTHONPATH=os.pathsep.join([p for p in sys.path if p]))
    subprocess.run([sys.executable, __file__, str(path), str(torch.get_num_threads())], env=env,
                   check=True, timeout=300)
    streamed = torch.load(path)
    plain = outputs()
    assert streamed.keys() == plain.keys()
    for key, tensors in plain.items():
        for i, (a, b) in enumerate(zip(tensors, streamed[key])):
            assert a.stride() == b.stride(), (key, i)
            assert torch.equal(a, b), (key, i)


if __name__ == "__main__":
    torch.set_num_threads(int(sys.argv[2]))
    torch.save(outputs(), sys.argv[1])
