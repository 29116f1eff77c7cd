"""Fused BatchNorm + ReLU: fastconv vs PyTorch eager and torch.compile (inductor) of the PyTorch
version, interleaved repeats, medians. Run: python benchmarks/bn_compare.py [--threads 1]
Prints training forward+backward, training forward and inference times, the speedups, and
fastconv's bandwidth as % of a measured copy (minimal passes: shared/bench/README.md)."""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import fastconv.nn.functional as FC


def timed(fn, reps):
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def copy_bandwidth(numel=64 << 20):
    a = torch.empty(numel)
    a.fill_(1.0)
    b = torch.empty_like(a)
    best = min(timed(lambda: b.copy_(a), 3) for _ in range(3))
    return 2 * a.numel() * 4 / best


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--shape", default="8,256,56,56")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--no-compile", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    n, c, h, w = map(int, args.shape.split(","))
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    x = torch.randn(n, c, h, w).contiguous(memory_format=fmt).requires_grad_()
    dy = torch.randn_like(x)
    weight, bias = torch.rand(c) + 0.5, torch.randn(c) * 0.1
    rm, rv = torch.zeros(c), torch.ones(c)

    def torch_bn(t, training):
        return torch.relu_(F.batch_norm(t, rm, rv, weight, bias, training))

    compiled = None if args.no_compile else torch.compile(torch_bn)
    impls = {"fastconv": lambda t, tr: FC.batch_norm_relu(t, rm, rv, weight, bias, tr),
             "eager": torch_bn}
    if compiled is not None:
        impls["compile"] = compiled
    passes = {
        "fwd+bwd": lambda f: (lambda: torch.autograd.grad(f(x, True), x, dy)),
        "fwd": lambda f: (lambda: f(x.detach(), True)),
        "infer": lambda f: (lambda: f(x.detach(), False)),
    }
    bw = copy_bandwidth()
    m = x.numel() * 4
    minimal = {"fwd+bwd": 8, "fwd": 3, "infer": 2}
    print(f"shape {args.shape} {'NHWC' if args.channels_last else 'NCHW'}, "
          f"{args.threads} thread(s), copy bandwidth {bw / 1e9:.1f} GB/s")
    for name, make in passes.items():
        fns = {k: make(f) for k, f in impls.items()}
        times = {k: [] for k in fns}
        for _ in range(args.rounds):  # interleaved: load changes hit every side alike
            for k, fn in fns.items():
                times[k].append(timed(fn, 3))
        med = {k: statistics.median(v) for k, v in times.items()}
        pct = minimal[name] * m / med["fastconv"] / bw * 100
        line = "  ".join(f"{k} {v * 1e3:7.2f} ms" for k, v in med.items())
        ratios = "  ".join(f"vs {k} {med[k] / med['fastconv']:.2f}x" for k in med if k != "fastconv")
        print(f"{name:8s} {line}  | {ratios}  | {pct:.0f}% of copy bandwidth")


if __name__ == "__main__":
    main()
