"""The build: CUDA toolkit discovery, CUDA kernels in the build, and nvcc's resource report."""
import ast
import os
import pathlib
import re
import shutil

import pytest
import torch

import fastconv

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _setup_functions():
    """setup.py's toolkit-discovery functions, without running setup()."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    keep = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
            and not any(a.name.startswith(("torch", "setuptools")) for a in n.names)
            and getattr(n, "module", None) not in ("setuptools", "torch.utils.cpp_extension")]
    keep += [n for n in tree.body
             if isinstance(n, ast.FunctionDef) and n.name in ("_is_toolkit_root", "find_cuda_home")]
    namespace = {}
    exec(compile(ast.Module(body=keep, type_ignores=[]), "setup.py", "exec"), namespace)
    return namespace


def _fake_toolkit(root):
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "nvcc").write_text("#!/bin/sh\n")
    (root / "lib64").mkdir()
    (root / "lib64" / "libcudart.so").write_text("")
    return root


def test_find_cuda_home_sees_through_an_nvcc_wrapper(tmp_path, monkeypatch):
    toolkit = _fake_toolkit(tmp_path / "opt" / "cuda-13.0")
    wrapper_dir = tmp_path / "bin"
    wrapper_dir.mkdir()
    wrapper = wrapper_dir / "nvcc"
    wrapper.write_text(f'#!/bin/sh\nexec {toolkit}/bin/nvcc "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", str(wrapper_dir))
    # PyTorch's own guess would be dirname(dirname(wrapper)) = tmp_path, which has no cudart.
    assert _setup_functions()["find_cuda_home"]() == str(toolkit.resolve())


def test_find_cuda_home_honours_cuda_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "elsewhere"))
    assert _setup_functions()["find_cuda_home"]() == str(tmp_path / "elsewhere")


@pytest.mark.skipif(shutil.which("nvcc") is None or torch.version.cuda is None
                    or os.environ.get("FASTCONV_CUDA") == "0",
                    reason="no nvcc or a CPU-only PyTorch: the build has no CUDA kernels")
def test_cuda_kernels_are_built_when_nvcc_and_cuda_torch_exist():
    assert fastconv.cuda_kernels_built()


PTXAS_LOG = ROOT / "build" / "ptxas.log"


@pytest.mark.skipif(not PTXAS_LOG.exists(), reason="no nvcc resource report in build/ "
                    "(the CUDA kernels were not compiled by scripts/setup.sh here)")
def test_no_register_spills_or_stack_in_cuda_kernels():
    text = PTXAS_LOG.read_text()
    frames = re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads",
                        text)
    assert frames, "the resource report lists no kernels"
    offenders = [f for f in frames if any(int(v) for v in f)]
    assert not offenders, f"stack frames or spills in CUDA kernels: {offenders}"
