"""Benchmark shapes: load layers.json (package data) and pick the entries of one suite.

layers.json is a copy of shared/bench/layers.json; see that directory's README for where
every shape comes from and what each field means. Besides its suites there is one virtual
suite, `quick`, the default: small enough for a 2-core CPU in a few minutes.
"""
import json
from pathlib import Path

LAYERS_JSON = Path(__file__).with_name("layers.json")

QUICK = "quick"
QUICK_DESCRIPTION = (
    "cpu_smoke entries whose op has a case builder, plus the full-size (n_cpu) entries the "
    "max-pool smoke entries were copied from")


def load_layers(path=None):
    """The parsed layers.json (the packaged copy unless `path` names another file)."""
    with open(path or LAYERS_JSON) as f:
        return json.load(f)


def suite_names(layers):
    return [QUICK] + list(layers["suites"])


def _all_entries(layers):
    """id -> entry over every suite (ids are unique file-wide)."""
    return {e["id"]: e for suite in layers["suites"].values() for e in suite["entries"]}


def _quick_entries(layers, has_builder):
    # The smoke entries run at n_cpu = 1; the max-pool ones are also timed at the batch of
    # the network they come from, because at batch 1 they are too small to say much about
    # bandwidth. Entries are kept in smoke order, each original right after its smoke copy.
    by_id = _all_entries(layers)
    picked = []
    for e in layers["suites"]["cpu_smoke"]["entries"]:
        if not has_builder(e["op"]):
            continue
        picked.append(e)
        if e["op"] == "max_pool2d" and e.get("from") in by_id:
            picked.append(by_id[e["from"]])
    return picked


def select(layers, suite=QUICK, ops=None, has_builder=None):
    """Entries of `suite`, in file order, restricted to the op names in `ops` (if given).

    `has_builder(op) -> bool` says which ops the harness can run; only the `quick` suite
    uses it (the named suites list every entry and the runner reports the missing ones).
    """
    if suite == QUICK:
        if has_builder is None:
            from .cases import has_builder  # late import: cases imports torch
        entries = _quick_entries(layers, has_builder)
    elif suite in layers["suites"]:
        entries = list(layers["suites"][suite]["entries"])
    else:
        raise KeyError(f"unknown suite {suite!r}; choose from {', '.join(suite_names(layers))}")
    if ops:
        entries = [e for e in entries if e["op"] in set(ops)]
    return entries


def describe(layers, suite):
    """One line describing a suite."""
    if suite == QUICK:
        return QUICK_DESCRIPTION
    return layers["suites"][suite].get("description", "")
