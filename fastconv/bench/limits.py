"""The machine's limits, measured in the same run as the benchmark (shared/bench/README.md).

CPU: fp32 FMA peak from the C++ microkernel behind torch.ops.fastconv._fma_peak_gflops
(csrc/cpu/machine_limits.cpp) and copy bandwidth from a torch copy of a tensor far larger
than the last-level cache. CUDA: datasheet peaks for the product (read from the device
name) plus a measured device-to-device copy. A limit that cannot be had is None ("n/a").
"""
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch

MiB = 1 << 20

# Dense peaks in TFLOP/s and HBM bandwidth in GB/s, from shared/bench/README.md.
# Matched in order against torch.cuda.get_device_name(): the first hit wins.
GPU_DATASHEETS = [
    ("H200", dict(product="H200", fp32=66.9, tf32=494.7, fp16=989.4, bf16=989.4, hbm_gbs=4800)),
    ("H100 PCIe", dict(product="H100 PCIe", fp32=51.0, tf32=378.0, fp16=756.0, bf16=756.0,
                       hbm_gbs=2000)),
    ("H100", dict(product="H100 SXM5", fp32=66.9, tf32=494.7, fp16=989.4, bf16=989.4,
                  hbm_gbs=3350)),
]


@dataclass
class Limits:
    device: str
    name: str                               # CPU model or GPU product
    threads: int
    fma_gflops: Optional[float] = None      # fp32, measured (CPU) or datasheet (CUDA)
    fma_source: str = "n/a"
    copy_gbs: Optional[float] = None        # read + write bytes per second, measured
    copy_bytes: int = 0                     # size of the copied tensor
    llc_bytes: Optional[int] = None         # last-level cache (CPU) / L2 (GPU)
    isa: str = ""
    datasheet: dict = field(default_factory=dict)

    def compute_gflops(self, dtype):
        """The FLOP/s limit for a dtype: CPU fp64 is half the fp32 FMA rate; fp16/bf16 on CPU
        are held to the fp32 rate (that is what convert-and-FMA kernels can reach)."""
        if self.device == "cuda":
            key = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype)
            peak = self.datasheet.get(key) if key else None
            return peak * 1e3 if peak else None
        if self.fma_gflops is None:
            return None
        return self.fma_gflops / 2 if dtype == torch.float64 else self.fma_gflops

    def as_dict(self):
        return asdict(self)


# ---- CPU --------------------------------------------------------------------------------

def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_isa():
    """Widest FMA vector ISA the CPU reports (the microkernel picks the same at run time)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), [])
    except OSError:
        return platform.machine()
    if "avx512f" in flags:
        return "avx512f"
    if "avx2" in flags and "fma" in flags:
        return "avx2+fma"
    return platform.machine()


def llc_bytes():
    """Size of the highest cache level of cpu0 from sysfs (Linux), else None."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    caches = []  # (level, bytes)
    try:
        for index in sorted(i for i in os.listdir(base) if i.startswith("index")):
            with open(os.path.join(base, index, "level")) as f:
                level = int(f.read())
            with open(os.path.join(base, index, "size")) as f:
                text = f.read().strip()
            size = int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)
            caches.append((level, size))
    except (OSError, ValueError, IndexError):
        return None
    return max(caches)[1] if caches else None


def available_memory():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def fma_peak_gflops(seconds=0.5, threads=None):
    """fp32 FMA peak in GFLOP/s via the fastconv op, or None when the op is not built."""
    threads = threads or torch.get_num_threads()
    try:
        op = torch.ops.fastconv._fma_peak_gflops
    except (AttributeError, RuntimeError):
        return None
    try:
        # Best of four short runs: the first one may still be ramping the clock up, and one
        # session-9 run measured half the peak (98.9 against 166-182 GFLOP/s in the runs around
        # it) when both of its runs were slowed.
        return max(float(op(seconds / 4, threads)) for _ in range(4))
    except RuntimeError:
        return None


def copy_size(device, requested=None):
    """Bytes per tensor for the bandwidth test: far above the last-level cache (at least
    256 MiB and 2x the LLC), but no more than an eighth of the free memory (two tensors)."""
    if requested:
        return int(requested)
    if device == "cuda":
        return 1024 * MiB  # 20x the 50 MB L2 of an H100
    size = max(256 * MiB, 2 * (llc_bytes() or 0))
    free = available_memory()
    if free:
        size = min(size, free // 8)
    return size


def copy_bandwidth_gbs(device="cpu", nbytes=None, repeats=5):
    """Median GB/s of dst.copy_(src), counting read + write bytes, with all of torch's threads."""
    nbytes = copy_size(device, nbytes)
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    dst.copy_(src)  # first touch: page faults must not count
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        sync()
        times.append(time.perf_counter() - start)
    times.sort()
    median = times[len(times) // 2]
    return 2 * src.numel() * 4 / median / 1e9, src.numel() * 4


# ---- entry point --------------------------------------------------------------------------

def measure(device="cpu", fma_seconds=0.5, copy_bytes=None, threads=None) -> Limits:
    threads = threads or torch.get_num_threads()
    if device == "cuda":
        name = torch.cuda.get_device_name()
        sheet = next((dict(s) for key, s in GPU_DATASHEETS if key in name), {})
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        lim = Limits(device="cuda", name=name, threads=threads,
                     isa=f"sm_{props.major}{props.minor}",
                     llc_bytes=getattr(props, "L2_cache_size", None), datasheet=sheet)
        if sheet:
            lim.fma_gflops, lim.fma_source = sheet["fp32"] * 1e3, f"datasheet {sheet['product']}"
        lim.copy_gbs, lim.copy_bytes = copy_bandwidth_gbs("cuda", copy_bytes)
        return lim
    lim = Limits(device="cpu", name=cpu_name(), threads=threads, isa=cpu_isa(),
                 llc_bytes=llc_bytes())
    lim.fma_gflops = fma_peak_gflops(fma_seconds, threads)
    if lim.fma_gflops is not None:
        lim.fma_source = f"measured, {threads} threads, fp32 FMA microkernel"
    lim.copy_gbs, lim.copy_bytes = copy_bandwidth_gbs("cpu", copy_bytes)
    return lim
