"""`python -m cpr_function check`: load each version step by step, and report what happened."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, TextIO

from ..catalog import VersionSpec
from ..config import Config
from ..errors import CprError

PHASES = ("download", "unpack", "import", "from_path")


def report(config: Config, specs: Sequence[VersionSpec] | None, instance: Any, out: TextIO) -> bool:
    """Checks versions (all configured ones when `specs` is None); writes a line per step.

    Returns:
        Whether every step of every version succeeded.
    """
    if specs is None:
        from ..http.app import load_catalog

        try:
            catalog = load_catalog(config)
        except CprError as exc:
            print(f"FAIL configuration: {exc}", file=out)
            return False
        specs = catalog.versions()
        source = catalog.source or ("the bundled example" if config.is_example else "CPR_*")
        print(f"ok   configuration: {len(specs)} version(s) from {source}", file=out)
    results = [_version(config, spec, instance, out) for spec in specs]
    return all(results)


def _version(config: Config, spec: VersionSpec, instance: Any, out: TextIO) -> bool:
    print(f"model {spec.model} version {spec.name}", file=out)
    if not spec.in_process:
        return _forward(spec, instance, out)
    from ..loading.storage import Storage
    from ..serving.model import LazyModel

    model = LazyModel(spec, config, Storage.configured(config))
    shown = _ShimLines(model.shims, out)
    try:
        model.get()
    except CprError as exc:
        for phase in PHASES:
            if phase == model.failed_phase:
                print(f"  FAIL {phase:<10} {model.phases.get(phase, 0):.3f}s  {exc}", file=out)
                break
            print(f"  ok   {phase:<10} {model.phases.get(phase, 0):.3f}s", file=out)
        shown.new()
        return False
    stats = model.fetch_stats
    details = {
        "download": f"{stats.get('objects', 0)} objects, {stats.get('downloaded', 0)} "
        f"downloaded ({stats.get('downloadedBytes', 0)} bytes of {stats.get('totalBytes', 0)})",
        "unpack": f"{stats.get('unpacked', 0)} package(s) unpacked",
        "import": spec.prediction_class or f"framework {spec.framework or 'detected'}",
        "from_path": "loaded",
    }
    for phase in PHASES:
        print(f"  ok   {phase:<10} {model.phases[phase]:.3f}s  {details[phase]}", file=out)
    shown.new()
    if instance is None:
        print("  --   predict    not run: give --instance to try one", file=out)
        return True
    ok = _predict(lambda: model.respond({"instances": [instance]}), out)
    shown.new()
    return ok


class _ShimLines:
    """Writes a `shim` line for each compatibility shim the version needed, once."""

    def __init__(self, shims, out: TextIO):
        self._shims = shims
        self._out = out
        self._written = 0

    def new(self) -> None:
        listed = self._shims.listed()
        for shim in listed[self._written :]:
            print(f"  shim {shim['shim']}: {shim['detail']}", file=self._out)
        self._written = len(listed)


def _forward(spec: VersionSpec, instance: Any, out: TextIO) -> bool:
    from ..remote.forward import Forwarder

    forwarder = Forwarder(spec)
    print(f"  ok   forward    to {forwarder.upstream.target.shown}", file=out)
    if instance is None:
        print("  --   predict    not run: give --instance to call the upstream", file=out)
        return True
    return _predict(lambda: forwarder.respond({"instances": [instance]}), out)


def _predict(call, out: TextIO) -> bool:
    from .. import protocol

    start = time.perf_counter()
    try:
        encoded = protocol.encode(call())
    except CprError as exc:
        print(f"  FAIL predict    {time.perf_counter() - start:.3f}s  {exc}", file=out)
        return False
    shown = encoded.decode()
    shown = shown if len(shown) <= 200 else shown[:200] + "..."
    print(f"  ok   predict    {time.perf_counter() - start:.3f}s  {shown}", file=out)
    return True
