"""The benchmark harness (fastconv.bench): suites, work counts, timing, report, CLI.

Fast by design: tiny shapes and very short timing windows. Speed itself is never asserted
here (GUIDE: speed goals live in benchmarks, not in timed unit tests).
"""
import json

import pytest
import torch
import torch.nn.functional as F

from fastconv.bench import cases, limits, report, suites, timing
from fastconv.bench.__main__ import main

# A synthetic suite: one small max-pool (overlapping windows, ceil_mode, padding) and one
# entry of an op without a builder, which must be reported as skipped.
TINY_LAYERS = {
    "sources": [],
    "suites": {
        "tiny": {
            "description": "test suite",
            "entries": [
                {"id": "tiny_pool", "op": "max_pool2d", "n": 2, "n_cpu": 2, "c": 3, "h": 9,
                 "w": 11, "kernel": [3, 3], "stride": [2, 2], "pad": [1, 1],
                 "dilation": [1, 1], "ceil_mode": True, "count": 1, "note": ""},
                {"id": "tiny_conv", "op": "no_such_op", "n": 1, "n_cpu": 1, "c": 3, "h": 8,
                 "w": 8, "count": 1, "note": ""},
            ],
        }
    },
}

FAST_ARGS = ["--min-run-time", "0.001", "--repeats", "2", "--fma-seconds", "0.01",
             "--copy-mib", "8"]


@pytest.fixture
def tiny_layers(tmp_path):
    path = tmp_path / "layers.json"
    path.write_text(json.dumps(TINY_LAYERS))
    return str(path)


def test_packaged_layers_and_suites():
    layers = suites.load_layers()
    names = suites.suite_names(layers)
    assert names[0] == "quick"
    assert {"resnet50", "maxpool", "cpu_smoke", "bn_relu", "roi_align"} <= set(names)
    ids = [e["id"] for s in layers["suites"].values() for e in s["entries"]]
    assert len(ids) == len(set(ids)), "entry ids must be unique file-wide"
    for suite in layers["suites"].values():
        for e in suite["entries"]:
            assert {"id", "op", "n", "n_cpu"} <= set(e)

    # quick = implemented smoke entries, each max-pool one followed by its full-size source
    quick = suites.select(layers, "quick", has_builder=lambda op: op == "max_pool2d")
    assert [e["id"] for e in quick] == [
        "smoke_mp_rn50_pool1", "mp_rn50_pool1", "smoke_mp_googlenet_pool1",
        "mp_googlenet_pool1", "smoke_mp_inception_3a", "mp_inception_3a"]
    assert suites.select(layers, "quick", has_builder=lambda op: False) == []

    pools = suites.select(layers, "cpu_smoke", ops=["max_pool2d"])
    assert len(pools) == 3 and all(e["op"] == "max_pool2d" for e in pools)
    with pytest.raises(KeyError, match="unknown suite"):
        suites.select(layers, "no_such_suite")


def test_max_pool2d_bytes_by_hand():
    # README: forward e*N*C*H*W + (e+8)*N*C*P*Q; ResNet-50 pool, fp32: 5.62 MB per image.
    layers = suites.load_layers()
    entry = next(e for e in layers["suites"]["cpu_smoke"]["entries"]
                 if e["id"] == "smoke_mp_rn50_pool1")
    assert cases.MaxPool2d.output_hw(entry) == (56, 56)
    n, c, h, w, p, q, e = 1, 64, 112, 112, 56, 56, 4
    by_hand = 4 * 1 * 64 * 112 * 112 + (4 + 8) * 1 * 64 * 56 * 56
    assert by_hand == 5_619_712
    traffic = cases.max_pool2d_bytes(n, c, h, w, p, q, e)
    assert traffic == {"fwd": by_hand, "bwd": by_hand}  # bwd: read dy + index, write dx


@pytest.mark.parametrize("entry_id", ["mp_googlenet_pool1", "mp_rn50_pool1", "mp_inception_3a",
                                      "mp_alexnet_pool5"])
def test_pool_output_size_matches_torch(entry_id):
    layers = suites.load_layers()
    entry = next(e for e in layers["suites"]["maxpool"]["entries"] if e["id"] == entry_id)
    geometry = cases.MaxPool2d.geometry(entry)
    x = torch.empty(1, 1, entry["h"], entry["w"])
    assert cases.MaxPool2d.output_hw(entry) == tuple(F.max_pool2d(x, **geometry).shape[-2:])


def test_skip_reason():
    assert "no case builder" in cases.skip_reason({"op": "no_such_op"})
    assert cases.skip_reason({"op": "max_pool2d"}) is None  # fastconv's function exists


def test_interleaved_timing():
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    result = timing.interleaved(fns, rounds=2, min_run_time=0.001, num_threads=1,
                                warmup_time=0.0)
    assert set(result) == {"a", "b"}
    for t in result.values():
        assert t.median > 0 and t.iqr >= 0 and t.calls > 0 and t.times
    # round 0 runs a then b; round 1 runs b first (calls after the warm-up of a and b)
    timed = calls[6:]
    first_b = timed.index("b")
    assert "a" in timed[:first_b] and timed[-1] == "a"


def test_machine_limits_small():
    gbs, nbytes = limits.copy_bandwidth_gbs("cpu", nbytes=4 * 2**20, repeats=3)
    assert gbs > 0 and nbytes == 4 * 2**20
    peak = limits.fma_peak_gflops(0.01)
    assert peak is None or peak > 0  # None until the op is registered in the build


def test_foreign_load_warning():
    share = timing.ForeignLoad().share()
    assert share is None or 0.0 <= share <= 1.0
    meta = {"device": "cpu", "cpu_count": 2}
    assert report.load_warning(dict(meta, foreign_cpu_share=0.01)) is None
    assert "40%" in report.load_warning(dict(meta, foreign_cpu_share=0.4))


def test_list(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "quick" in out and "smoke_mp_rn50_pool1" in out
    assert main(["--list", "--suite", "cpu_smoke"]) == 0
    listing = capsys.readouterr().out
    # every op of the smoke suite has a case builder and a fastconv function now
    assert "ready" in listing and "not implemented yet" not in listing


def test_end_to_end_tiny(tmp_path, tiny_layers, capsys):
    out_dir = tmp_path / "results"
    rc = main(["--layers", tiny_layers, "--suite", "tiny", "--out", str(out_dir)] + FAST_ARGS)
    assert rc == 0
    text = capsys.readouterr().out
    assert "threads" in text and "oneDNN" in text and "copy bandwidth" in text

    data = json.loads((out_dir / "results.json").read_text())
    assert data["meta"]["threads"] == torch.get_num_threads()
    assert "foreign_cpu_share" in data["meta"] and "mkldnn_enabled" in data["meta"]
    assert data["limits"]["copy_gbs"] > 0
    rows = data["results"]
    timed = [r for r in rows if r["status"] == "ok"]
    assert {(r["memory_format"], r["pass"]) for r in timed} == {
        (f, p) for f in ("contiguous", "channels_last") for p in ("fwd", "bwd")}
    for r in timed:
        assert r["fastconv"]["median_ms"] > 0 and r["torch"]["median_ms"] > 0
        assert r["speedup"] > 0 and r["pct_limit_fastconv"] > 0
        # 2x3x9x11 -> 5x6 with ceil_mode; fp32: 4*594 + 12*180
        assert r["bytes"] == 4 * 2 * 3 * 9 * 11 + 12 * 2 * 3 * 5 * 6
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert [r["id"] for r in skipped] == ["tiny_conv"]
    assert "not implemented yet" in skipped[0]["note"]
    assert (out_dir / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_failing_case_is_reported_not_timed(tmp_path, tiny_layers, monkeypatch, capsys):
    def wrong(x, **kwargs):  # off by one: the check must catch it before any timing
        out, idx = F.max_pool2d_with_indices(x, **kwargs)
        return out + 1, idx
    monkeypatch.setattr(cases.MaxPool2d, "fastconv_fn", lambda self: wrong)
    rc = main(["--layers", tiny_layers, "--suite", "tiny", "--ops", "max_pool2d",
               "--memory-format", "channels_last", "--out", str(tmp_path)] + FAST_ARGS)
    assert rc == 1
    rows = json.loads((tmp_path / "results.json").read_text())["results"]
    assert [r["status"] for r in rows] == ["FAIL", "FAIL"]
    assert all("output" in r["note"] and "fastconv" not in r for r in rows)
    assert "not timed" in capsys.readouterr().out


def test_row_peak_brackets_compute_rows(tmp_path, capsys):
    # A compute-bound row (conv2d) gets the FMA peak measured right before and after it and its
    # % of that peak; a memory-bound one (max-pool) does not, nor any row with the option off.
    layers = {"sources": [], "suites": {"tiny": {"description": "test suite", "entries": [
        {"id": "tiny_conv3x3", "op": "conv2d", "n": 1, "n_cpu": 1, "c": 8, "h": 6, "w": 6,
         "k": 8, "r": 3, "s": 3, "stride": [1, 1], "pad": [1, 1], "dilation": [1, 1],
         "groups": 1, "count": 1, "note": ""},
        TINY_LAYERS["suites"]["tiny"]["entries"][0]]}}}
    path = tmp_path / "layers.json"
    path.write_text(json.dumps(layers))
    args = ["--layers", str(path), "--suite", "tiny", "--memory-format", "channels_last",
            "--ops", "conv2d,max_pool2d"] + FAST_ARGS
    header = "against the FMA peak measured right before and after the row"
    assert main(args + ["--out", str(tmp_path / "on"), "--row-peak-seconds", "0.01"]) == 0
    assert header in capsys.readouterr().out
    rows = json.loads((tmp_path / "on" / "results.json").read_text())["results"]
    conv = [r for r in rows if r["op"] == "conv2d"]
    pool = [r for r in rows if r["op"] == "max_pool2d"]
    assert conv and pool and all(r["status"] == "ok" for r in rows)
    for r in conv:
        assert r["fma_gflops_row"] > 0
        for side in ("fastconv", "torch"):
            want = 100 * r[f"{side}_rate"] / r["fma_gflops_row"]
            assert r[f"pct_row_peak_{side}"] == pytest.approx(want)
    assert all("fma_gflops_row" not in r for r in pool)
    assert main(args + ["--out", str(tmp_path / "off"), "--row-peak-seconds", "0"]) == 0
    assert header not in capsys.readouterr().out
    rows = json.loads((tmp_path / "off" / "results.json").read_text())["results"]
    assert all("fma_gflops_row" not in r and "pct_row_peak_fastconv" not in r for r in rows)
