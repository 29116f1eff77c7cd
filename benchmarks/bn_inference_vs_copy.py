"""BatchNorm + ReLU inference against a plain copy of the same tensor, in one process.

The fused inference op reads x once and writes y once: at best it runs as fast as
`y.copy_(x)`. PyTorch eager runs `batch_norm` (a read and a write) and then an in-place `relu_`
(another read and write, of a tensor that may still be in cache). So the speedup of the fused
op over eager is at most (eager time) / (copy time), printed here as `bound`, next to the
measured speedup. Run: python benchmarks/bn_inference_vs_copy.py [--threads 2] [--reps 30]
"""
import argparse
import time

import torch
import torch.nn.functional as F

import fastconv.nn.functional as FC

SHAPES = [(8, 64, 112, 112), (8, 64, 56, 56), (8, 128, 56, 56), (8, 256, 56, 56), (8, 128, 28, 28),
          (8, 512, 28, 28)]


def best_ms(fn, reps):
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'shape':18s} {'format':6s} {'copy':>7s} {'bn':>7s} {'bn+relu':>8s} {'fused':>7s}"
          f" {'bound':>6s} {'speedup':>8s}   (ms, best of {args.reps}; {args.threads} threads)")
    for shape in SHAPES:
        for fmt, name in ((torch.contiguous_format, "NCHW"), (torch.channels_last, "NHWC")):
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(shape, generator=gen).contiguous(memory_format=fmt)
            c = shape[1]
            mean, var = torch.randn(c, generator=gen), torch.rand(c, generator=gen) + 0.5
            weight, bias = torch.randn(c, generator=gen), torch.randn(c, generator=gen)
            y = torch.empty_like(x)
            eager = F.relu_(F.batch_norm(x, mean, var, weight, bias, False))
            fused = FC.batch_norm_relu(x, mean, var, weight, bias, training=False)
            torch.testing.assert_close(fused, eager)  # the same function, before timing it
            # rounds of all four, interleaved, so a slow phase of the machine hits each of them
            t = {"copy": float("inf"), "bn": float("inf"), "bn+relu": float("inf"), "fused": float("inf")}
            fns = {"copy": lambda: y.copy_(x),
                   "bn": lambda: F.batch_norm(x, mean, var, weight, bias, False),
                   "bn+relu": lambda: F.relu_(F.batch_norm(x, mean, var, weight, bias, False)),
                   "fused": lambda: FC.batch_norm_relu(x, mean, var, weight, bias, training=False)}
            for _ in range(3):
                for key, fn in fns.items():
                    t[key] = min(t[key], best_ms(fn, args.reps // 3 + 1))
            shape_s = "x".join(map(str, shape))
            print(f"{shape_s:18s} {name:6s} {t['copy']:7.3f} {t['bn']:7.3f} {t['bn+relu']:8.3f} "
                  f"{t['fused']:7.3f} {t['bn+relu'] / t['copy']:5.2f}x {t['bn+relu'] / t['fused']:7.2f}x",
                  flush=True)


if __name__ == "__main__":
    main()
