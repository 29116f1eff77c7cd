"""Benchmark output: the header and table on stdout, results.json and results.png on disk.

A result row is a plain dict (see __main__.run_case) so the JSON is just the rows plus the
run's settings and limits.
"""
import json
import os

STATUS_OK = "ok"

COLUMNS = [  # (title, key in the formatted row, alignment)
    ("op", "op", "<"), ("entry", "id", "<"), ("shape", "shape", "<"), ("format", "fmt", "<"),
    ("pass", "pass", "<"), ("check", "check", "<"), ("fastconv ms", "fc", ">"),
    ("PyTorch ms", "pt", ">"), ("speedup", "speedup", ">"), ("achieved", "rate", ">"),
    ("% of limit fc / pt", "pct", ">"), ("% of row peak fc / pt", "pct_row", ">"),
]

FORMAT_ABBREV = {"contiguous": "NCHW", "channels_last": "NHWC"}


def _ms(side):
    if not side:
        return "-"
    return f"{side['median_ms']:.3f} ±{side['iqr_ms']:.3f}"


def _pct(v):
    return "n/a" if v is None else f"{v:.0f}%"


def format_row(row):
    timed = row["status"] == STATUS_OK
    cache_mark = "*" if row.get("fits_in_cache") else ""
    out = {
        "op": row["op"], "id": row["id"], "shape": row.get("shape", ""),
        "fmt": FORMAT_ABBREV.get(row.get("memory_format"), row.get("memory_format") or "-"),
        "pass": row.get("pass") or "-",
        "check": "pass" if timed else row["status"],
        "fc": _ms(row.get("fastconv")), "pt": _ms(row.get("torch")),
        "speedup": f"{row['speedup']:.2f}x" if timed else "-",
        "rate": "-", "pct": "-", "pct_row": "-",
    }
    if timed:
        unit = row["rate_unit"]
        out["rate"] = f"{row['fastconv_rate']:.1f} {unit}{cache_mark}"
        out["pct"] = f"{_pct(row['pct_limit_fastconv'])} / {_pct(row['pct_limit_torch'])}"
        if "pct_row_peak_fastconv" in row:
            out["pct_row"] = (f"{_pct(row['pct_row_peak_fastconv'])} / "
                              f"{_pct(row['pct_row_peak_torch'])}")
    return out


def table(rows):
    """The results as an aligned text table, with non-ok rows' notes listed under it."""
    cells = [format_row(r) for r in rows]
    widths = [max([len(title)] + [len(c[key]) for c in cells]) for title, key, _ in COLUMNS]
    line = lambda vals: "  ".join(  # noqa: E731
        f"{v:{align}{w}}" for v, w, (_, _, align) in zip(vals, widths, COLUMNS)).rstrip()
    lines = [line([t for t, _, _ in COLUMNS]), line(["-" * w for w in widths])]
    lines += [line([c[key] for _, key, _ in COLUMNS]) for c in cells]
    notes = {}  # one note per case: a failed check fails all passes of the case alike
    for r in rows:
        if r["status"] != STATUS_OK:
            what = " ".join(str(v) for v in (r["id"], r.get("memory_format")) if v)
            notes.setdefault(what, f"  {what}: {r['status']}: {r.get('note', '')}")
    if any(r.get("fits_in_cache") for r in rows):
        lines.append("* working set fits in the last-level cache and stays there between "
                     "repetitions: % of the DRAM copy limit can exceed 100")
    lines += memory_lines(rows)
    if notes:
        lines += ["", "not timed:"] + list(notes.values())
    return "\n".join(lines)


def memory_lines(rows):
    """Activation memory of cases that measure it (model training steps), once per case."""
    out, seen = [], set()
    for r in rows:
        key = (r["id"], r.get("memory_format"))
        if "saved_bytes_fastconv" not in r or key in seen:
            continue
        seen.add(key)
        fc, pt = r["saved_bytes_fastconv"], r["saved_bytes_torch"]
        out.append(f"  {r['id']} {FORMAT_ABBREV.get(r.get('memory_format'), '')}: saved for "
                   f"backward in a training step: fastconv {fc / 2**20:.1f} MiB, PyTorch "
                   f"{pt / 2**20:.1f} MiB ({fc / pt:.2f}x)")
    return ["", "activation memory:"] + out if out else []


def header(meta, limits):
    """Settings that decide what the numbers mean, printed above the table."""
    lim = limits
    fma = ("n/a (torch.ops.fastconv._fma_peak_gflops is not available)"
           if lim.get("fma_gflops") is None
           else f"{lim['fma_gflops']:.1f} GFLOP/s ({lim.get('fma_source')})")
    copy = "n/a" if lim.get("copy_gbs") is None else f"{lim['copy_gbs']:.1f} GB/s"
    llc = f"{lim['llc_bytes'] / 2**20:.0f} MiB" if lim.get("llc_bytes") else "unknown"
    lines = [
        f"fastconv benchmark: suite {meta['suite']} ({meta['entries']} entries), dtype "
        f"{meta['dtype']}, device {meta['device']}, formats {', '.join(meta['memory_formats'])}",
        f"torch {meta['torch']}; {lim['name']} ({lim.get('isa', '')}); threads "
        f"{meta['threads']} for both sides; oneDNN (torch.backends.mkldnn) "
        f"{'enabled' if meta['mkldnn_enabled'] else 'disabled'}"
        f"{'' if meta['mkldnn_available'] else ' (not built)'}",
        f"limits: fp32 FMA peak {fma}; copy bandwidth "
        f"{copy} (read + write, {lim.get('copy_bytes', 0) / 2**20:.0f} MiB copy); "
        f"last-level cache {llc}",
        f"timing: torch.utils.benchmark blocked_autorange, {meta['repeats']} interleaved rounds "
        f"x {meta['min_run_time']} s per side; medians ± IQR; correctness checked first",
    ]
    if meta["device"] == "cpu" and meta.get("row_peak_seconds"):
        lines.append("% of row peak: against the FMA peak measured right before and after the "
                     "row (the better of the two), as the machine's speed drifts during a run")
    if meta["device"] == "cuda":
        sheet = lim.get("datasheet") or {}
        sheet_text = (f"{sheet['product']}: fp32 {sheet['fp32']} / tf32 {sheet['tf32']} / "
                      f"bf16 {sheet['bf16']} TFLOP/s, HBM {sheet['hbm_gbs']} GB/s"
                      if sheet else "unknown product (compute % of limit is n/a)")
        lines.append(f"cuda: TF32 allowed in cuDNN {meta.get('cudnn_allow_tf32')}, in matmul "
                     f"{meta.get('matmul_allow_tf32')}; cudnn.benchmark "
                     f"{meta.get('cudnn_benchmark')}; datasheet {sheet_text}")
    return "\n".join(lines)


def load_warning(meta, threshold=0.05):
    """A warning when other processes took a noticeable share of the CPUs during the run."""
    share = meta.get("foreign_cpu_share")
    if meta["device"] != "cpu" or share is None or share < threshold:
        return None
    return (f"WARNING: other processes used {100 * share:.0f}% of the {meta['cpu_count']} "
            "cores' time during this run; a displaced worker thread stalls a whole parallel "
            "region, so these timings are unreliable. Rerun on a quiet machine.")


def write_json(path, meta, limits, rows):
    with open(path, "w") as f:
        json.dump({"meta": meta, "limits": limits, "results": rows}, f, indent=1)
    return path


def _label(row):
    return f"{row['id']} {FORMAT_ABBREV.get(row['memory_format'], '')} {row['pass']}"


def write_png(path, meta, rows):
    """Two panels per timed row: speedup over PyTorch, and % of the machine limit."""
    import matplotlib
    matplotlib.use("Agg")  # no display on CI machines and servers
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    timed = [r for r in rows if r["status"] == STATUS_OK]
    height = max(2.5, 0.28 * len(timed) + 1.5)
    fig, (ax_s, ax_p) = plt.subplots(1, 2, figsize=(13, height), sharey=True)
    title = (f"fastconv vs PyTorch: suite {meta['suite']}, {meta['dtype']}, {meta['device']}, "
             f"{meta['threads']} threads")
    fig.suptitle(title, fontsize=10)
    if not timed:
        ax_s.text(0.5, 0.5, "no timed cases", ha="center", va="center", transform=ax_s.transAxes)
    else:
        ys = list(range(len(timed)))[::-1]  # first row at the top
        speedups = [r["speedup"] for r in timed]
        # bars grow from 1 on a log axis, so 2x faster and 2x slower look alike
        ax_s.barh(ys, [s - 1 for s in speedups], left=1.0,
                  color=["tab:green" if s >= 1 else "tab:red" for s in speedups])
        ax_s.set_xscale("log", base=2)
        ax_s.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
        ax_s.axvline(1.0, color="black", linewidth=0.8)
        ax_s.set_yticks(ys)
        ax_s.set_yticklabels([_label(r) for r in timed], fontsize=7)
        ax_s.set_xlabel("speedup (PyTorch time / fastconv time)")
        pct = lambda r, k: r[k] or 0.0  # noqa: E731  n/a plots as 0
        h = 0.4
        ax_p.barh([y + h / 2 for y in ys], [pct(r, "pct_limit_fastconv") for r in timed],
                  height=h, label="fastconv", color="tab:blue")
        ax_p.barh([y - h / 2 for y in ys], [pct(r, "pct_limit_torch") for r in timed],
                  height=h, label="PyTorch", color="tab:gray")
        ax_p.axvline(100.0, color="black", linewidth=0.8)
        ax_p.set_xlabel("% of limit (copy bandwidth or FMA peak)")
        ax_p.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(out_dir, meta, limits, rows):
    os.makedirs(out_dir, exist_ok=True)
    js = write_json(os.path.join(out_dir, "results.json"), meta, limits, rows)
    png = write_png(os.path.join(out_dir, "results.png"), meta, rows)
    return js, png
