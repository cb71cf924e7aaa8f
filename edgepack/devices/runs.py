"""One device run: every bundle on every device of the inventory (in the deployment configuration too where the
runtime's defaults differ from the parity configuration), judged, written as JSON + JUnit and kept in the history.

Each result carries, next to the device's own parity and latency, the build host's (``host``: the conversion-
fidelity parity and the host latency from the bundle's report.json). Latency measured on an emulated device is
stored with ``latency_where = "emulated"`` and never judged; a profile's device-class latency budget
(``[budgets.device.<class>]``, :mod:`edgepack.devices.latency_budget`) is judged only on real devices of that class,
on the configuration the device deploys (OpenVINO: ``deployment``; ORT/LiteRT: their one run).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import platform
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable
from xml.sax.saxutils import escape, quoteattr

from edgepack.devices import latency_budget
from edgepack.devices.adb import AdbTransport, judge_benchmark
from edgepack.devices.inventory import Device
from edgepack.devices.transports import CommandTransport, LocalTransport, SshTransport, Transport
from edgepack.devices.verdicts import FAIL, FLAKY, INCONCLUSIVE, NOT_RUN, OK, PASS, SKIPPED, combine, judge, retryable

# Backends whose device loader pins a parity precision that differs from the runtime's own default on some CPUs
# (OpenVINO: f16 on ARM, bf16 on AMX/AVX512-BF16 x86); they also run in the deployment configuration.
DEPLOYMENT_DIFFERS = frozenset({"openvino"})


@dataclass
class Result:
    """One (device, bundle, configuration) outcome."""

    device: str
    kind: str
    device_class: str
    bundle: str
    target: str
    backend: str
    config: str
    status: str
    reason: str = ""
    attempts: list[str] = field(default_factory=list)
    seconds: float = 0.0
    latency_where: str = "device"  # device | emulated
    latency: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)  # per output: cosine_min/mean, top1 agreement
    runtime: dict[str, Any] = field(default_factory=dict)
    machine: str = ""
    diagnosis: str = ""
    budget: dict[str, Any] = field(default_factory=dict)  # the device-class latency budget's verdict, when one applies
    cpu: str = ""  # the emulated CPU model (qemu -cpu) on an emulated device
    cause: str = ""  # of a parity failure: one of CAUSES (see diagnose)
    precision_effect: dict[str, Any] = field(default_factory=dict)  # deployment vs parity config on this device
    host: dict[str, Any] = field(default_factory=dict)  # the build host's parity + latency (bundle report.json)

    @property
    def ok(self) -> bool:
        return self.status in OK



def transport_for(device: Device) -> Transport:
    kinds = {"local": LocalTransport, "arm64-emu": LocalTransport, "ssh": SshTransport, "adb": AdbTransport,
             "command": CommandTransport, "x86-64-emu": LocalTransport}
    if device.kind not in kinds:
        raise ValueError(f"device {device.name}: kind {device.kind} is not driven from here (see docs/devices.md)")
    return kinds[device.kind](device)


def read_manifest(bundle: Path) -> dict[str, Any]:
    """A bundle's manifest as plain JSON, checked only as far as the harness uses it (the runner verifies the rest):
    a regular UTF-8 file under the text limit holding an object with ``target.name`` and ``artifact.backend``."""
    from edgepack.errors import BundleError
    from edgepack.safety import read_bytes, shown

    raw = read_bytes(bundle / "manifest.json", "bundle manifest", error=BundleError)
    try:
        m = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise BundleError(f"bundle {shown(bundle)}: manifest.json is not valid UTF-8 JSON ({shown(e, 100)})") from None
    target, art = (m.get("target"), m.get("artifact")) if isinstance(m, dict) else (None, None)
    if not isinstance(m, dict):
        raise BundleError(f"bundle {shown(bundle)}: manifest.json holds a JSON {type(m).__name__}, not an object")
    if not (isinstance(target, dict) and isinstance(target.get("name"), str)
            and isinstance(art, dict) and isinstance(art.get("backend"), str)):
        raise BundleError(f"bundle {shown(bundle)}: manifest.json has no target.name or artifact.backend")
    return m


def bundle_info(bundle: Path) -> tuple[str, str]:
    """(target, backend) from the bundle's manifest, read as plain JSON (no trust needed: the runner verifies)."""
    m = read_manifest(bundle)
    return m["target"]["name"], m["artifact"]["backend"]


def check_bundle(bundle: Path) -> dict[str, Any]:
    """Everything ``device run`` checks on a bundle before any device sees it; returns its manifest. The bundle's
    folder name goes through the same name check as ``build`` (it is substituted into device commands).
    The one place for more pre-push checks of a bundle (e.g. ``bundle.verify``): ``device run`` calls it for every
    bundle before the first device runs."""
    from edgepack.errors import BundleError
    from edgepack.safety import check_name, odd_entries, shown

    check_name(bundle.name, "bundle folder name", error=BundleError)
    if bundle.name.startswith("-"):  # it would read as an option to the device's commands
        raise BundleError(f"bundle folder name '{bundle.name}' starts with '-'", hint="rename the bundle folder")
    odd = odd_entries(bundle)  # a FIFO or a link to /dev/zero would hang the copy to the device
    if odd:
        raise BundleError(f"bundle {shown(bundle)}: {odd[0]}" + (f" (and {len(odd) - 1} more)" if len(odd) > 1 else ""),
                          hint="a bundle holds regular files only; `edgepack verify BUNDLE` lists every problem")
    return read_manifest(bundle)


def find_bundles(roots: list[Path]) -> list[Path]:
    found: list[Path] = []
    for root in roots:
        root = Path(root)
        if (root / "manifest.json").is_file() and (root / "run_bundle.py").is_file():
            found.append(root)
            continue
        found += sorted(p.parent for p in root.rglob("manifest.json") if (p.parent / "run_bundle.py").is_file())
    return found


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parity_summary(verdict: dict) -> dict[str, Any]:
    """The few numbers per output kept in the history (not the whole check list); anything not a finite number
    from the device is left out."""
    out: dict[str, Any] = {}
    metrics = (verdict.get("parity") or {}).get("metrics") or {}
    for name, m in (metrics.items() if isinstance(metrics, dict) else ()):
        if not isinstance(m, dict):
            continue
        keep = {k: m[k] for k in ("cosine", "sample_cosine_min", "sample_cosine_p1", "top1_agreement",
                                  "top1_agreement_ci_low", "top1_agreement_ci_high", "top1_agreement_n", "max_abs_error")
                if _number(m.get(k))}
        out[str(name)] = keep
    return out


def latency_of(verdict: dict) -> dict[str, Any]:
    """The device's latency as the history keeps it: finite numbers (samples: a list of them) and short strings."""
    lat = verdict.get("latency") or {}
    out: dict[str, Any] = {}
    for k, v in (lat.items() if isinstance(lat, dict) else ()):
        if k == "samples_ms":
            out[k] = [float(x) for x in v if _number(x)] if isinstance(v, list) else []
        elif _number(v) or (isinstance(v, str) and len(v) <= 200 and not str(k).endswith(("_ms", "_s"))
                            and k not in ("runs", "repeats", "warmup")):
            out[str(k)] = v
    return out


def runtime_of(verdict: dict) -> dict[str, Any]:
    rt = verdict.get("runtime") or {}
    return {str(k): v for k, v in (rt.items() if isinstance(rt, dict) else ())
            if v is None or isinstance(v, (str, bool)) or _number(v)}


def host_reference(bundle: Path) -> dict[str, Any]:
    """What the build host measured for this bundle (its report.json): conversion-fidelity parity, host latency.
    The file is data: read as a regular file under the text limit, only values of the expected types kept, and
    nothing at all when it is missing or malformed."""
    from edgepack.errors import EdgepackError
    from edgepack.safety import read_bytes

    try:
        rep = json.loads(read_bytes(bundle / "report.json", "bundle report").decode("utf-8"))
    except (EdgepackError, ValueError, RecursionError):
        return {}
    if not isinstance(rep, dict):
        return {}
    lat = rep.get("latency") if isinstance(rep.get("latency"), dict) else {}
    par = rep.get("parity") if isinstance(rep.get("parity"), dict) else {}
    rt = lat.get("runtime") if isinstance(lat.get("runtime"), dict) else {}
    passed, precision = par.get("passed"), rt.get("inference_precision")
    return {"where": "host", "passed": passed if isinstance(passed, bool) else None,
            "parity": parity_summary({"parity": par}),
            "p50_ms": lat["p50_ms"] if _number(lat.get("p50_ms")) else None,
            "p90_ms": lat["p90_ms"] if _number(lat.get("p90_ms")) else None,
            "inference_precision": precision if isinstance(precision, str) else None}


def run_one(device: Device, bundle: Path, config: str, *, repeats: int, warmup: int, budget: Any = None) -> Result:
    """Run one bundle in one configuration on one device (INFRA retried); ``budget`` (a DeviceLatencyBudget) sizes
    the latency run and is judged on the result (never on an emulated device)."""
    target, backend = bundle_info(bundle)
    transport = transport_for(device)
    attempts: list[str] = []
    min_seconds = 0.0
    if budget is not None and not device.emulated:
        repeats, warmup, min_seconds = max(repeats, budget.min_runs), max(warmup, budget.warmup), budget.min_seconds
    t0 = time.monotonic()
    while True:
        raw = transport.run(bundle, repeats=repeats, warmup=warmup, config=config, min_seconds=min_seconds)
        latency_only = device.kind == "adb" and not device.python
        status, reason, verdict = judge_benchmark(raw) if latency_only else judge(raw)
        attempts.append(status)
        if not retryable(status) or len(attempts) > device.retries:
            break
    lat = latency_of(verdict)
    lat.pop("where", None)
    res = Result(device=device.name, kind=device.kind, device_class=device.klass, bundle=str(bundle), target=target,
                 backend=backend, config=config, status=combine(attempts), reason=reason, attempts=attempts,
                 seconds=round(time.monotonic() - t0, 3), latency_where="emulated" if device.emulated else "device",
                 latency=lat, parity=parity_summary(verdict), runtime=runtime_of(verdict),
                 machine=str(verdict.get("host", "")), host=host_reference(bundle),
                 cpu=(device.cpu or {"arm64-emu": "cortex-a76", "x86-64-emu": "Haswell"}.get(device.kind, "")))
    if res.status == FLAKY:
        res.reason = f"passed on attempt {len(attempts)} after {', '.join(attempts[:-1])}"
    if budget is not None and res.status in (PASS, FLAKY, NOT_RUN, INCONCLUSIVE):
        res.budget = latency_budget.judge(budget, latency_of(verdict), device_class=device.klass,
                                          emulated=device.emulated)
        if res.budget["status"] == latency_budget.EXCEEDED:
            res.status, res.reason = FAIL, res.budget["note"]
    return res


def _worst(parity: dict[str, Any], key: str) -> float | None:
    vals = [m[key] for m in (parity or {}).values() if m.get(key) is not None]
    return min(vals) if vals else None


def precision_effect(deployment: Result, parity: Result) -> dict[str, Any]:
    """What the device's deployment defaults cost against its parity configuration, on the same device and bundle
    (worst output): the precisions that ran and the change of top-1 agreement and per-sample cosine p1."""
    out: dict[str, Any] = {"parity_precision": parity.runtime.get("inference_precision"),
                           "deployment_precision": deployment.runtime.get("inference_precision")}
    for key in ("top1_agreement", "sample_cosine_p1"):
        a, b = _worst(parity.parity, key), _worst(deployment.parity, key)
        if a is not None and b is not None:
            out[f"{key}_change"] = b - a
    return out


CAUSES = ("conversion", "deployment-precision", "emulator-or-cpu-kernels", "device-runtime")


def diagnose(results: list[Result]) -> None:
    """Name the cause of each parity failure (``Result.cause`` + a sentence in ``diagnosis``), from the other results
    of the same bundle and the build host's conversion-fidelity verdict (the bundle's report.json):

    * ``conversion``: the build host's own parity check of the bundle failed too — the bundle is wrong everywhere.
    * ``deployment-precision``: the deployment configuration fails while the parity configuration passes on the same
      device (e.g. OpenVINO's f16 default on ARM) — the runtime's default precision, not the emulator, not the
      conversion. Every deployment result also carries ``precision_effect`` (pass or fail).
    * ``emulator-or-cpu-kernels``: the parity configuration fails on an emulated device while the host (or a real
      device) passes: qemu's emulation of this CPU model or the runtime's kernels for it; the sentence names the
      other qemu cpu models on which it passed, if any, else says which to try. Only a real core of that ISA
      separates the two (docs/devices/openvino-arm64.md).
    * ``device-runtime``: the parity configuration fails on a real device while the host passes: the runtime build
      or its kernels on that device.
    """
    by = {(r.device, r.bundle, r.config): r for r in results}
    for r in results:
        if r.config == "deployment" and (p := by.get((r.device, r.bundle, "parity"))) is not None \
                and r.parity and p.parity:
            r.precision_effect = precision_effect(r, p)
    for r in results:
        if r.status != FAIL or r.budget.get("status") == latency_budget.EXCEEDED:
            continue  # parity verdicts only (a latency budget or INFRA is not a parity cause)
        if r.reason.startswith("integrity"):
            continue  # a bundle changed after it was built says so itself
        host_passed = r.host.get("passed")
        p = by.get((r.device, r.bundle, "parity"))
        if host_passed is False:
            r.cause, r.diagnosis = "conversion", ("conversion: the build host's conversion-fidelity check of this "
                                                  "bundle fails too — the bundle is wrong everywhere")
        elif r.config == "deployment" and p is not None and p.ok:
            prec = r.runtime.get("inference_precision", "?")
            r.cause = "deployment-precision"
            r.diagnosis = (f"deployment precision: the runtime's default on this device ({prec} inference precision) "
                           f"fails parity while the parity configuration ({p.runtime.get('inference_precision', '?')})"
                           " passes on the same device — the runtime's choice, not the emulator, not the conversion")
        elif r.config == "parity" and r.latency_where == "emulated" and (
                host_passed or any(o.bundle == r.bundle and o.config == "parity" and o.ok
                                   and o.latency_where != "emulated" for o in results)):
            cpus = sorted({f"{o.device} (-cpu {o.cpu})" if o.cpu else o.device for o in results
                           if o.bundle == r.bundle and o.config == "parity" and o.ok and o.latency_where == "emulated"})
            where = (f"it passes on the emulated {', '.join(cpus)}" if cpus else
                     "rerun with another qemu cpu (cpu = \"cortex-a53\" / \"neoverse-n1\" / \"max\")")
            r.cause = "emulator-or-cpu-kernels"
            r.diagnosis = ("emulator or the runtime's kernels for this CPU model: fails here, the build host passes "
                           f"the same bundle; {where}")
        elif r.config == "parity" and host_passed:
            r.cause = "device-runtime"
            r.diagnosis = ("device runtime: fails on this real device while the build host passes the same bundle — "
                           "the runtime build or its kernels on this device")


# The emulated CPU a failing emulated run is tried again on: ARMv8.2 with FP16 and dot-product, no SVE/SME — the
# class of core in most phones. docs/devices/openvino-arm64.md: an INT8 OpenVINO bundle fails its parity under
# qemu -cpu max (SVE 512 bits, SME) and passes on this one.
REFERENCE_CPU = {"arm64-emu": "cortex-a76", "x86-64-emu": "Haswell"}


def crosscheck(devices: list[Device], results: list[Result], progress: Callable[[str], None]) -> list[Result]:
    """For each parity FAIL on an emulated device whose bundle the build host passed, one more run of it on the
    same emulator with the reference CPU model (:data:`REFERENCE_CPU`), named ``<device>@<cpu>``: passing there
    localizes the fault to the first CPU model's feature paths (the runtime's kernels for them or their emulation),
    not the bundle. Nothing is re-run when the device already is the reference CPU."""
    by_name = {d.name: d for d in devices}
    extra: list[Result] = []
    for r in results:
        dev = by_name.get(r.device)
        ref = REFERENCE_CPU.get(dev.kind) if dev is not None else None
        if (ref is None or r.status != FAIL or r.config != "parity" or not r.host.get("passed")
                or r.reason.startswith("integrity") or (r.cpu or ref) == ref):
            continue
        twin = replace(dev, name=f"{dev.name}@{ref}", cpu=ref, retries=0)
        progress(f"{twin.name} · {r.target} · cross-check")
        extra.append(run_one(twin, Path(r.bundle), "parity", repeats=1, warmup=0))
    return extra


def verify_before_push(bundle: Path) -> None:
    """Refuse (BundleError) a bundle that ``edgepack verify`` refuses outright: a symlink, FIFO or device in it (the
    copy to a device would dereference a symlinked ``runner/device.py``), a path out of it, a Core ML weight file out
    of its package, a verdict that contradicts its check rows. A failed build verdict and changed bytes are left to
    the device runner, which reports them as a FAIL (``integrity: ...``) without loading anything.

    A folder whose manifest does not name itself an edgepack bundle (no ``edgepack_version``: the harness's own
    stand-in bundles) gets the symlink/FIFO/device check only; its runner checks the rest on the device."""
    from edgepack import bundle as bundles
    from edgepack import safety

    if bundles.is_bundle(bundle):
        bundles.refuse_unsafe(bundles.verify(bundle, allow_failed=True))
        return
    odd = safety.odd_entries(bundle)
    if odd:
        bundles.refuse_unsafe(bundles.Verification(Path(bundle), 0, odd))


def run_all(devices: list[Device], bundles: list[Path], *, repeats: int = 20, warmup: int = 3,
            deployment: bool = True, progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Run everything; returns the run record (``id``, ``started``, ``results`` as dicts). ``deployment=False``
    leaves out the deployment-configuration runs."""
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    for b in bundles:  # before anything is pushed to any device
        verify_before_push(b)
    results: list[Result] = []
    for dev in devices:
        if dev.kind == "ios":
            continue
        for b in bundles:
            target, backend = bundle_info(b)
            if dev.backends and backend not in dev.backends:
                continue
            extra = deployment and backend in DEPLOYMENT_DIFFERS and dev.kind != "adb"
            configs = ["parity"] + (["deployment"] if extra else [])
            budget = latency_budget.budget_for(read_manifest(b), dev.klass)
            for config in configs:
                progress(f"{dev.name} · {target} · {config}")
                # the budget is judged on the configuration the device deploys (the last one)
                results.append(run_one(dev, b, config, repeats=repeats, warmup=warmup,
                                       budget=budget if config == configs[-1] else None))
    results += crosscheck(devices, results, progress)
    diagnose(results)
    return {"id": uuid.uuid4().hex[:12], "started": started, "build_host": platform.node(),
            "results": [asdict(r) for r in results]}


def exit_code(run: dict) -> int:
    """0 when every run that ran passed (FLAKY counts as passed, NOT_RUN/SKIPPED never as passed but not failed),
    1 on any FAIL, INCONCLUSIVE or INFRA, 2 when nothing ran at all."""
    rs = run["results"]
    if not any(r["status"] in (PASS, FLAKY, INCONCLUSIVE) for r in rs):
        return 2 if all(r["status"] in (SKIPPED, NOT_RUN) for r in rs) else 1
    return 0 if all(r["status"] in (PASS, FLAKY, SKIPPED, NOT_RUN) for r in rs) else 1


def write_json(run: dict, path: Path) -> None:
    """The run record as JSON, through the no-follow atomic writer (never through a planted symlink)."""
    from edgepack.safety import write_atomic

    write_atomic(path, json.dumps(run, indent=2, allow_nan=False, default=str) + "\n", "device-run JSON")


def write_junit(run: dict, path: Path) -> None:
    """JUnit XML: one testsuite per device, one testcase per bundle × configuration. FAIL → <failure>, INCONCLUSIVE →
    <failure type="INCONCLUSIVE">,
    INFRA → <error>, SKIPPED/NOT_RUN → <skipped> (never a pass), FLAKY → passed with a system-out note."""
    suites: dict[str, list[dict]] = {}
    for r in run["results"]:
        suites.setdefault(r["device"], []).append(r)
    lines = ['<?xml version="1.0" encoding="utf-8"?>',
             f'<testsuites name="edgepack device run {escape(run["id"])}">']
    for dev, rs in suites.items():
        count = lambda *s: sum(r["status"] in s for r in rs)  # noqa: E731
        lines.append(f'  <testsuite name={quoteattr(dev)} tests="{len(rs)}" failures="{count("FAIL", "INCONCLUSIVE")}" '
                     f'errors="{count("INFRA")}" skipped="{count("SKIPPED", "NOT_RUN")}" '
                     f'time="{sum(r["seconds"] for r in rs):.3f}" timestamp={quoteattr(run["started"])}>')
        for r in rs:
            name = f'{r["target"]}[{r["config"]}]'
            lines.append(f'    <testcase classname={quoteattr(dev)} name={quoteattr(name)} time="{r["seconds"]:.3f}">')
            msg = quoteattr(r["reason"][:500])
            if r["status"] == "FAIL":
                lines.append(f'      <failure message={msg}>{escape(r.get("diagnosis") or r["reason"])}</failure>')
            elif r["status"] == INCONCLUSIVE:
                lines.append(f'      <failure type="INCONCLUSIVE" message={quoteattr("INCONCLUSIVE: " + r["reason"][:480])}/>')
            elif r["status"] == "INFRA":
                lines.append(f'      <error type="INFRA" message={msg}/>')
            elif r["status"] in ("SKIPPED", "NOT_RUN"):
                lines.append(f'      <skipped message={quoteattr(r["status"] + ": " + r["reason"][:480])}/>')
            elif r["status"] == "FLAKY":
                lines.append(f"      <system-out>FLAKY: {escape(r['reason'])}</system-out>")
            lines.append("    </testcase>")
        lines.append("  </testsuite>")
    lines.append("</testsuites>")
    from edgepack.safety import write_atomic

    write_atomic(path, "\n".join(lines) + "\n", "device-run JUnit")
