"""The CPU channel-fused schedule reads small NCHW planes in blocks of channels (as many as fit
1 MiB of the tensors a pass reads; csrc/cpu/batch_norm_passes.h, channel_block). The block size
changes the order of memory accesses only, never the arithmetic: a subprocess with
FASTCONV_BN_BLOCK_BYTES=1 (one channel per block, read once per process) must produce the same
bits as this process, whose own results the other test files check against PyTorch and
float64; training forward and backward, with and without a residual, fp32 and fp64, shapes with
one and with several chunks per channel (7x7 planes are grouped 83 to a chunk)."""
import os
import subprocess
import sys

import torch

ops = torch.ops.fastconv
SHAPES = [(8, 96, 7, 7), (100, 16, 7, 7), (3, 40, 5, 3), (2, 24, 14, 14)]


def outputs():
    import fastconv  # noqa: F401  (registers the ops)
    gen = torch.Generator().manual_seed(0)
    out = {}
    for shape in SHAPES:
        for dtype in (torch.float32, torch.float64):
            c = shape[1]
            x, g, r = (torch.randn(shape, generator=gen).to(dtype) for _ in range(3))
            w = (torch.rand(c, generator=gen) + 0.5).to(dtype)
            b = torch.randn(c, generator=gen).to(dtype)
            for residual in (None, r):
                rm, rv = torch.zeros(c, dtype=dtype), torch.ones(c, dtype=dtype)
                y, mean, var = ops._batch_norm_forward_train(x, w, b, residual, rm, rv, 0.1, 1e-5,
                                                             True)
                grads = ops._batch_norm_backward(g, x, mean, var, w, b, residual, 1e-5, True, True,
                                                 residual is not None)
                out[f"{shape}-{dtype}-{residual is not None}"] = [y, mean, var, rm, rv, *grads]
    return out


def test_block_size_does_not_change_results(tmp_path):
    path = tmp_path / "one_channel_blocks.pt"
    env = dict(os.environ, FASTCONV_BN_BLOCK_BYTES="1",
               PYTHONPATH=os.pathsep.join([p for p in sys.path if p]))
    subprocess.run([sys.executable, __file__, str(path)], env=env, check=True, timeout=300)
    single = torch.load(path)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # channel-fused for every shape above
    try:
        blocked = outputs()
    finally:
        torch.set_num_threads(previous)
    assert single.keys() == blocked.keys()
    for key, tensors in blocked.items():
        for i, (a, b) in enumerate(zip(tensors, single[key])):
            assert torch.equal(a, b), (key, i)


if __name__ == "__main__":
    torch.set_num_threads(1)
    torch.save(outputs(), sys.argv[1])
