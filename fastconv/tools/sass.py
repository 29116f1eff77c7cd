"""Static facts about the compiled CUDA kernels, read from fastconv._C without a GPU.

    python -m fastconv.tools.sass [--library PATH] [--json]

Per kernel and GPU architecture: registers, stack, shared and local memory (cuobjdump
-res-usage), the maximum block size its __launch_bounds__ promise (EIATTR_MAX_THREADS in
cuobjdump -elf; 0 without launch bounds), and from the SASS (cuobjdump -sass) whether it has local-memory loads/stores
(LDL/STL: spills or dynamically indexed arrays), 128-bit global loads and stores
(LDG.E.128/STG.E.128), tensor-core instructions (HMMA) and asynchronous copies (LDGSTS). cuobjdump comes from the PyPI
packages nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm (the minimal toolkit here has neither),
or the toolkit's bin/.
"""
import argparse
import functools
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field


@dataclass
class Kernel:
    arch: str
    mangled: str
    name: str = ""
    registers: int = 0
    stack: int = 0
    shared: int = 0
    local: int = 0
    max_threads: int = 0  # from __launch_bounds__; 0: none declared
    mnemonics: set = field(default_factory=set)

    @property
    def local_memory_instructions(self):
        return bool(self.mnemonics & {"LDL", "STL"})

    @property
    def vector_128_global(self):
        return any(m.startswith(("LDG", "STG")) and ".128" in m for m in self.mnemonics)

    @property
    def tensor_core(self):
        return any(m.startswith("HMMA") for m in self.mnemonics)

    @property
    def async_copy(self):
        return any(m.startswith("LDGSTS") for m in self.mnemonics)


def find_cuobjdump():
    """cuobjdump from the nvidia-cuda-cuobjdump wheel, the CUDA toolkit, or PATH, provided
    nvdisasm (which `cuobjdump -sass` runs) is beside it or on PATH."""
    candidates = []
    try:
        import nvidia  # namespace package of the nvidia-* wheels

        candidates += [os.path.join(p, "cu13", "bin", "cuobjdump") for p in nvidia.__path__]
    except ImportError:
        pass
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(os.path.join(os.environ[var], "bin", "cuobjdump"))
    candidates.append(shutil.which("cuobjdump") or "")
    for c in candidates:
        beside = os.path.join(os.path.dirname(c), "nvdisasm")
        if c and os.access(c, os.X_OK) and (os.access(beside, os.X_OK) or shutil.which("nvdisasm")):
            return c
    return None


def default_library():
    import fastconv._C

    return fastconv._C.__file__


def _run(tool, *args):
    # cuobjdump finds nvdisasm on PATH: put the tool's own directory first.
    env = dict(os.environ, PATH=os.path.dirname(tool) + os.pathsep + os.environ.get("PATH", ""))
    return subprocess.run([tool, *args], check=True, capture_output=True, text=True,
                          env=env).stdout


def _demangle(names):
    if not names or shutil.which("c++filt") is None:
        return {n: n for n in names}
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True,
                         check=True).stdout.splitlines()
    return dict(zip(names, out))


def _kernel_lines(text, header, kernels, end=None):
    """(kernel, line) for each line of cuobjdump output `text` inside a kernel's part: from a
    line matching `header` (group 1: the mangled name) to the next header, the next
    "arch = sm_XX" line, or a line matching `end`. Kernels are created in `kernels`, keyed by
    (arch, mangled name)."""
    arch = current = None
    for line in text.splitlines():
        if m := re.match(r"\s*arch = (sm_\d+)", line):
            arch, current = m.group(1), None
        elif m := re.match(header, line):
            current = kernels.setdefault((arch, m.group(1)), Kernel(arch, m.group(1)))
        elif end is not None and re.match(end, line):
            current = None
        elif current is not None:
            yield current, line


def inspect(library=None, tool=None):
    """All kernels of `library` (default: fastconv._C), one Kernel per (arch, function).
    Read once per library file and tool in a process (the test modules share the result:
    disassembling every kernel takes a while); the Kernels returned are shared, do not modify
    them."""
    library = library or default_library()
    tool = tool or find_cuobjdump()
    if tool is None:
        raise RuntimeError("fastconv.tools.sass: expected cuobjdump and nvdisasm (pip install "
                           "nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm), got none")
    return list(_inspect(os.path.abspath(library), os.stat(library).st_mtime_ns, tool))


@functools.lru_cache(maxsize=8)
def _inspect(library, mtime_ns, tool):
    kernels = {}
    for k, line in _kernel_lines(_run(tool, "-res-usage", library), r"\s*Function (\S+):", kernels):
        if m := re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", line):
            k.registers, k.stack, k.shared, k.local = map(int, m.groups())
    threads_next = False
    # .nv.info.<kernel> sections; any other section (a line starting with ".") ends one
    for k, line in _kernel_lines(_run(tool, "-elf", library), r"\.nv\.info\.(\S+)$", kernels,
                                 end=r"\."):
        if "EIATTR_MAX_THREADS" in line:
            threads_next = True
        elif threads_next and (m := re.match(r"\s*Value:\s*(0x[0-9a-f]+) (0x[0-9a-f]+) "
                                             r"(0x[0-9a-f]+)", line)):
            x, y, z = (int(v, 16) for v in m.groups())
            k.max_threads = x * y * z
            threads_next = False
    for k, line in _kernel_lines(_run(tool, "-sass", library), r"\s*Function : (\S+)", kernels):
        if m := re.match(r"\s*/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", line):
            k.mnemonics.add(m.group(1))
    names = _demangle(sorted({k.mangled for k in kernels.values()}))
    for k in kernels.values():
        k.name = names[k.mangled]
    return tuple(sorted(kernels.values(), key=lambda k: (k.name, k.arch)))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastconv.tools.sass", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--library", help="shared object to inspect (default: fastconv._C)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    kernels = inspect(args.library)
    if args.json:
        rows = [dict(asdict(k), mnemonics=sorted(k.mnemonics), local_memory_instructions=
                     k.local_memory_instructions, vector_128_global=k.vector_128_global,
                     tensor_core=k.tensor_core, async_copy=k.async_copy) for k in kernels]
        json.dump(rows, sys.stdout, indent=1)
        print()
        return 0
    print(f"{'arch':6} {'reg':>4} {'block':>5} {'stack':>5} {'smem':>6} {'local':>5} "
          f"{'LDL/STL':>7} {'128-bit':>7} {'HMMA':>4} {'LDGSTS':>6}  kernel")
    yes = {True: "yes", False: "no"}
    for k in kernels:
        print(f"{k.arch:6} {k.registers:4d} {k.max_threads:5d} {k.stack:5d} {k.shared:6d} "
              f"{k.local:5d} {yes[k.local_memory_instructions]:>7} {yes[k.vector_128_global]:>7} "
              f"{yes[k.tensor_core]:>4} {yes[k.async_copy]:>6}  {k.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
