"""`python -m fastconv.bench` / `fastconv-bench`: time fastconv against PyTorch.

Runs one suite of shared/bench/layers.json (default `quick`), measures the machine's limits
in the same run, checks every case against PyTorch before timing it, and prints a table;
results.json and results.png go to --out. Exit status 1 when a case failed its check or
raised, so scripts notice; entries not implemented yet are skipped, not failures.
"""
import argparse
import dataclasses
import gc
import os
import sys

import torch

from . import cases, limits as limits_mod, report, suites, timing

DTYPES = {"float32": torch.float32, "float64": torch.float64,
          "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="fastconv-bench", description="Time fastconv against PyTorch on layers.json shapes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--suite", default=suites.QUICK,
                   help="suite of layers.json, or 'quick' (a few minutes on 2 CPU cores)")
    p.add_argument("--ops", default="", help="comma-separated op names to keep, e.g. max_pool2d")
    p.add_argument("--dtype", default="float32", choices=list(DTYPES))
    p.add_argument("--memory-format", default="both",
                   choices=["contiguous", "channels_last", "both"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--out", default="bench-results", help="directory for results.json/.png")
    p.add_argument("--repeats", type=int, default=3,
                   help="interleaved timing rounds per side (fastconv and PyTorch alternate)")
    p.add_argument("--min-run-time", type=float, default=0.2,
                   help="seconds of timing per side and round (blocked_autorange)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for both sides (default: torch.get_num_threads())")
    p.add_argument("--fma-seconds", type=float, default=0.5,
                   help="duration of the FMA-peak measurement")
    p.add_argument("--row-peak-seconds", type=float, default=0.1,
                   help="CPU: duration of the FMA-peak measurements right before and after "
                        "each compute-bound row (0: none)")
    p.add_argument("--copy-mib", type=int, default=None,
                   help="tensor size of the copy-bandwidth test (default: >= 256 MiB, 2x LLC)")
    p.add_argument("--layers", default=None, help="another layers.json (default: packaged)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--list", action="store_true", help="list suites and the selected entries")
    return p.parse_args(argv)


def print_list(layers, suite, entries, device):
    print("suites: " + ", ".join(
        f"{name} ({len(layers['suites'][name]['entries'])})" if name in layers["suites"]
        else name for name in suites.suite_names(layers)))
    print(f"\n{suite}: {suites.describe(layers, suite)}")
    for e in entries:
        reason = cases.skip_reason(e)
        shape = cases.describe(e, device)
        print(f"  {e['id']:<32} {e['op']:<17} {shape:<36} {reason or 'ready'}")


def progress(msg):
    print(msg, file=sys.stderr, flush=True)


def rate_and_pct(case, nbytes, flops, seconds, lim):
    """Achieved rate and % of the matching limit for one side."""
    if case.bound == "compute":
        rate, limit = flops / seconds / 1e9, lim.compute_gflops(case.dtype)
    else:
        rate, limit = nbytes / seconds / 1e9, lim.copy_gbs
    return rate, (100.0 * rate / limit if limit else None)


def row_peak(case, lim, seconds):
    """The FMA peak measured now (CPU, compute-bound rows), or None: this machine's speed
    moves by up to a third between minutes (a shared host), so a row is also reported
    against the peak of the minute it ran in, next to the run's start-of-run peak."""
    if seconds <= 0 or case.device != "cpu" or case.bound != "compute" or lim.fma_gflops is None:
        return None
    return limits_mod.fma_peak_gflops(seconds)


def run_case(case, lim, args, tag):
    """Check one case, then time each of its passes; one result row per pass."""
    base = dict(id=case.entry["id"], op=case.op, shape=case.shape, batch=case.batch,
                memory_format=case.memory_format, bound=case.bound,
                fits_in_cache=bool(lim.llc_bytes and case.working_set_bytes <= lim.llc_bytes),
                working_set_bytes=case.working_set_bytes, **case.extra)
    rows = [dict(base, **{"pass": p.name, "bytes": p.bytes, "flops": p.flops})
            for p in case.passes]
    try:
        failures = case.check()
    except Exception as e:  # a crash in either implementation is reported, not raised
        failures = [f"check raised {type(e).__name__}: {e}"]
    if failures:
        progress(f"{tag} {case.entry['id']} {case.memory_format}: FAIL: {failures[0]}")
        return [dict(r, status="FAIL", note="; ".join(failures)) for r in rows]
    for row, p in zip(rows, case.passes):
        try:
            before = row_peak(case, lim, args.row_peak_seconds)
            t = timing.interleaved({"fastconv": p.fastconv, "torch": p.torch},
                                   rounds=args.repeats, min_run_time=args.min_run_time,
                                   num_threads=torch.get_num_threads(), device=case.device)
            after = row_peak(case, lim, args.row_peak_seconds)
        except Exception as e:  # e.g. out of memory while timing: report it, go on
            row.update(status="error", note=f"timing raised {type(e).__name__}: {e}")
            progress(f"{tag} {case.entry['id']} {case.memory_format} {p.name}: {row['note']}")
            continue
        fc, pt = t["fastconv"], t["torch"]
        row["status"], row["note"] = report.STATUS_OK, ""
        for side, tm in (("fastconv", fc), ("torch", pt)):
            row[side] = dict(median_ms=tm.median_ms, iqr_ms=tm.iqr_ms, calls=tm.calls)
            row[f"{side}_rate"], row[f"pct_limit_{side}"] = rate_and_pct(
                case, p.bytes, p.flops, tm.median, lim)
        if before and after:  # the better of the two (each a best of 4 short runs, as at the start)
            row["fma_gflops_row"] = max(before, after)
            at_row = dataclasses.replace(lim, fma_gflops=row["fma_gflops_row"])
            for side, tm in (("fastconv", fc), ("torch", pt)):
                row[f"pct_row_peak_{side}"] = rate_and_pct(case, p.bytes, p.flops, tm.median, at_row)[1]
        row["rate_unit"] = "GFLOP/s" if case.bound == "compute" else "GB/s"
        row["speedup"] = pt.median / fc.median
        progress(f"{tag} {case.entry['id']} {case.memory_format} {p.name}: fastconv "
                 f"{fc.median_ms:.3f} ms, PyTorch {pt.median_ms:.3f} ms, "
                 f"speedup {row['speedup']:.2f}x")
    return rows


def run(args):
    layers = suites.load_layers(args.layers)
    ops = [o for o in args.ops.split(",") if o]
    entries = suites.select(layers, args.suite, ops=ops)
    if args.list:
        print_list(layers, args.suite, entries, args.device)
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("fastconv-bench: --device cuda but torch.cuda.is_available() is False",
              file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    meta = dict(suite=args.suite, entries=len(entries), dtype=args.dtype, device=args.device,
                memory_formats=(["contiguous", "channels_last"] if args.memory_format == "both"
                                else [args.memory_format]),
                torch=torch.__version__, threads=torch.get_num_threads(),
                mkldnn_available=torch.backends.mkldnn.is_available(),
                mkldnn_enabled=bool(torch.backends.mkldnn.enabled),
                repeats=args.repeats, min_run_time=args.min_run_time, seed=args.seed,
                row_peak_seconds=args.row_peak_seconds,
                cpu_count=os.cpu_count())
    if args.device == "cuda":
        # fp32 means fp32 (fairness rule 1): no TF32 in cuDNN or cuBLAS.
        if dtype == torch.float32:
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        meta.update(cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                    matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
                    cudnn_benchmark=torch.backends.cudnn.benchmark)

    foreign = timing.ForeignLoad()
    progress("measuring machine limits ...")
    lim = limits_mod.measure(args.device, fma_seconds=args.fma_seconds, threads=meta["threads"],
                             copy_bytes=args.copy_mib * 2**20 if args.copy_mib else None)
    print(report.header(meta, lim.as_dict()), flush=True)

    rows, total = [], len(entries) * len(meta["memory_formats"])
    done = 0
    for entry in entries:
        reason = cases.skip_reason(entry)
        if reason:
            done += len(meta["memory_formats"])
            progress(f"[{done}/{total}] {entry['id']}: skipped, {reason}")
            rows.append(dict(id=entry["id"], op=entry["op"],
                             shape=cases.describe(entry, args.device), memory_format=None,
                             status="skipped", note=reason))
            continue
        for fmt in meta["memory_formats"]:
            done += 1
            tag = f"[{done}/{total}]"
            torch.manual_seed(args.seed)
            try:
                case = cases.build_case(entry, dtype=dtype, device=args.device, memory_format=fmt)
            except Exception as e:  # unsupported dtype, out of memory, a crash in fastconv
                note = f"building the case raised {type(e).__name__}: {e}"
                progress(f"{tag} {entry['id']} {fmt}: error: {note}")
                rows.append(dict(id=entry["id"], op=entry["op"],
                                 shape=cases.describe(entry, args.device), memory_format=fmt,
                                 status="error", note=note))
                continue
            rows += run_case(case, lim, args, tag)
            del case  # free this case's tensors before the next one is built
            gc.collect()

    meta["foreign_cpu_share"] = foreign.share()
    print()
    print(report.table(rows))
    warning = report.load_warning(meta)
    if warning:
        print(warning)
    js, png = report.write_outputs(args.out, meta, lim.as_dict(), rows)
    print(f"\nwrote {js} and {png}")
    return 1 if any(r["status"] in ("FAIL", "error") for r in rows) else 0


def main(argv=None):
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
