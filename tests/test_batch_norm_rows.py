"""CPU BatchNorm loops over channels_last ("rows": N*H*W rows of C interleaved channels) and over
small NCHW planes: the row loops work in tiles of 8 fp32 (4 fp64) channels kept in registers
down bands of rows, with the leftover channels per row; the plane reductions keep each
channel's sums in vector lanes across its planes. Checked against float64 and, bit for bit,
across thread counts."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as TF

import fastconv  # noqa: F401  (registers the ops)

ops = torch.ops.fastconv

# C = 37: four fp32 tiles (nine fp64 ones) and 5 (1) leftover channels; 135 rows: row chunks of
#   64, 64 and 7 (odd); NCHW planes of 45 values (5 vectors of fp32 lanes + 5)
# C = 300: 37 fp32 tiles (75 fp64 ones) and 4 (0) leftover channels, bands of 12 fp32 rows, so
#   the one chunk of 63 rows ends with an odd band of 3
# C = 16: two fp32 tiles, no leftover; NCHW planes of 16 (4x4): two vectors of lanes
SHAPES = [(3, 37, 9, 5), (3, 300, 7, 3), (2, 16, 4, 4)]


def run_ops(shape, dtype, memory_format):
    """(y, mean, var, running mean, running var, grad x, w, b, residual) of the one-op forward
    and backward, with a residual and the ReLU."""
    torch.manual_seed(0)
    c = shape[1]
    x, g, r = (torch.randn(shape, dtype=dtype).contiguous(memory_format=memory_format)
               for _ in range(3))
    x = x * 2 + 3  # a mean far from 0: the sums are shifted by a pivot
    w, b = torch.rand(c, dtype=dtype) + 0.5, torch.randn(c, dtype=dtype) * 0.5
    rm, rv = torch.zeros(c, dtype=dtype), torch.ones(c, dtype=dtype)
    y, mean, var = ops._batch_norm_forward_train(x, w, b, r, rm, rv, 0.1, 1e-5, True)
    grads = ops._batch_norm_backward(g, x, mean, var, w, b, r, 1e-5, True, True, True)
    return (x, g, r, w, b), (y, mean, var, rm, rv, *grads)


def reference(x, g, r, w, b, eps):
    """float64 relu(batch_norm(x) + r) and its gradients (x, w, b, r)."""
    xd, rd, wd, bd = (t.double().requires_grad_() for t in (x, r, w, b))
    y = TF.relu(TF.batch_norm(xd, None, None, wd, bd, True, 0.0, eps) + rd)
    grads = torch.autograd.grad(y, (xd, wd, bd, rd), g.double())
    dims = (0, 2, 3)
    return y.detach(), xd.detach().mean(dims), xd.detach().var(dims, unbiased=False), grads


@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_float64_and_thread_counts(shape, dtype, memory_format):
    results = []
    previous = torch.get_num_threads()
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            (x, g, r, w, b), out = run_ops(shape, dtype, memory_format)
            results.append(out)
    finally:
        torch.set_num_threads(previous)
    for a, b_ in zip(*results):
        assert torch.equal(a, b_)
    y, mean, var, _, _, gx, gw, gb, gr = results[0]
    assert y.is_contiguous(memory_format=memory_format)
    assert gx.is_contiguous(memory_format=memory_format)
    y64, mean64, var64, (gx64, gw64, gb64, gr64) = reference(x, g, r, w, b, 1e-5)
    # float32: the gradients are sums of ~100-600 terms of size ~1 that partly cancel
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    for ours, ref in ((y, y64), (mean, mean64), (var, var64), (gx, gx64), (gw, gw64),
                      (gb, gb64), (gr, gr64)):
        torch.testing.assert_close(ours.double(), ref, **tol)


@pytest.mark.parametrize("env", [{"FASTCONV_BN_TILE_CHANNELS": "100000"},
                                 {"FASTCONV_BN_BAND_BYTES": "1000"}], ids=["rows", "bands"])
def test_tiles_and_bands_do_not_change_results(tmp_path, env):
    # a subprocess runs channels_last as whole rows, or tiles in bands of 4 rows (the settings
    # are read once per process): the same bits as this process's tiles in bands of up to 64
    path = tmp_path / "other.pt"
    env = dict(os.environ, **env, PYTHONPATH=os.pathsep.join([p for p in sys.path if p]))
    subprocess.run([sys.executable, __file__, str(path)], env=env, check=True, timeout=300)
    other = torch.load(path)
    for key, tensors in all_outputs().items():
        for i, (a, b) in enumerate(zip(tensors, other[key])):
            assert torch.equal(a, b), (key, i)


def all_outputs():
    return {f"{shape}-{dtype}": run_ops(shape, dtype, torch.channels_last)[1]
            for shape in SHAPES for dtype in (torch.float32, torch.float64)}


if __name__ == "__main__":
    torch.save(all_outputs(), sys.argv[1])
