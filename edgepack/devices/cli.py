"""``edgepack device``: set up emulated devices, run bundles on an inventory of devices, report the history.

Mounted by ``edgepack.cli`` as a sub-app; everything heavy is imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

app = typer.Typer(name="device", help="Run bundles on real and emulated devices; keep and report the history.",
                  no_args_is_help=True, add_completion=False, rich_markup_mode="markdown",
                  pretty_exceptions_enable=False)
console = Console(highlight=False)
err = Console(stderr=True, highlight=False)

DEFAULT_HISTORY = Path("device-runs/history.sqlite")


def _line(text: object, limit: int = 2000) -> str:
    """User text for the terminal: Rich markup escaped, control characters shown, never interpreted."""
    from rich.markup import escape

    from edgepack.safety import shown

    return escape(shown(text, limit))


# The commands raise EdgepackError (one `error:` line + `hint:`, exit 2); `edgepack.cli` wraps each of them in the
# build's error handler (tracebacks only with EDGEPACK_DEBUG=1; SIGINT/SIGTERM: 130/143 with one line).


@app.command(epilog="Example:\n\n  edgepack device setup arm64-emu")
def setup(
    name: Annotated[str, typer.Argument(help="the emulated device to build: arm64-emu")],
    *,
    force: Annotated[bool, typer.Option("--force", help="rebuild even when the cached prefix is current")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="print every command")] = False,
) -> None:
    """Build an emulated device from the package registries (Debian arm64 .debs + aarch64 wheels), cached in
    ~/.cache/edgepack/devices/NAME. Needs root for apt-get the first time (qemu-user-static, arm64 lists)."""
    import time

    from edgepack.devices import setup as emu
    from edgepack.errors import ConfigError, EdgepackError
    from edgepack.safety import shown

    if name not in emu.EMULATED:
        raise ConfigError(f"unknown emulated device '{shown(name, 80)}'", hint=f"one of: {', '.join(emu.EMULATED)}")
    t0 = time.monotonic()
    try:
        py = emu.setup(emu.EMULATED[name], force=force, log=(lambda s: console.print(s, markup=False)) if verbose
                       else (lambda s: None))
    except emu.SetupError as e:
        raise EdgepackError(shown(e, 600), hint="see docs/devices.md (arm64-emu)") from None
    console.print(f"{name}: ready in {time.monotonic() - t0:.1f} s → {_line(py)}")


def _preflight(inventory) -> None:
    """The host-side programs the chosen devices need, before anything runs (a missing client is one line)."""
    import shutil

    from edgepack.errors import MissingDependency
    from edgepack.safety import shown

    for d in inventory:
        need = {"adb": [(d.adb, "apt-get install adb, or set adb = \"/path/to/adb\" for this device")],
                "ssh": [("ssh", "apt-get install openssh-client"), ("scp", "apt-get install openssh-client")]}
        for program, hint in need.get(d.kind, []):
            if not shutil.which(program):
                raise MissingDependency(f"device '{shown(d.name, 64)}' needs the {d.kind} client "
                                        f"'{shown(program, 120)}', which is not installed here", hint=hint)


@app.command(epilog="Example:\n\n  edgepack device run dist --devices devices.toml --out device-runs")
def run(
    bundles: Annotated[list[Path], typer.Argument(help="bundle folders, or folders containing bundles")],
    *,
    devices: Annotated[Path, typer.Option("--devices", "-d", help="the device inventory (TOML)")],
    out: Annotated[Path, typer.Option("--out", help="folder for <run id>.json and .junit.xml")] = Path("device-runs"),
    history: Annotated[Optional[Path], typer.Option(help="SQLite history to append to (default OUT/history.sqlite)")]
    = None,
    repeats: Annotated[int, typer.Option(min=1, max=100_000, help="timed runs per bundle")] = 20,
    warmup: Annotated[int, typer.Option(min=0, max=100_000, help="untimed runs first")] = 3,
    only: Annotated[Optional[list[str]], typer.Option("--device", help="run only these devices (by name)")] = None,
    deployment: Annotated[bool, typer.Option(help="also run the deployment configuration where it differs")] = True,
) -> None:
    """Run every bundle on every device; write JSON + JUnit, append to the history. Exit 1 on FAIL, INCONCLUSIVE or INFRA."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from edgepack.devices import history as hist
    from edgepack.devices import runs
    from edgepack.devices.inventory import load_inventory
    from edgepack.errors import ConfigError, InputError
    from edgepack.safety import shown

    inventory = load_inventory(devices)
    if only:
        unknown = sorted(set(only) - {d.name for d in inventory})
        if unknown:
            raise ConfigError(f"no device named '{shown(unknown[0], 64)}' in {shown(devices)}",
                              hint=f"devices in it: {', '.join(shown(d.name, 64) for d in inventory) or 'none'}")
        inventory = [d for d in inventory if d.name in only]
    if not [d for d in inventory if d.kind != "ios"]:
        raise ConfigError(f"no device to run on in {shown(devices)}" + (" (ios devices are not driven from here)"
                                                                       if inventory else ""),
                          hint="add a [[device]] table (see docs/devices.md), e.g. kind = \"local\"")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {shown(out)} is not a folder", hint="give --out a folder for the run's JSON and JUnit")
    history_path = history or out / "history.sqlite"
    hist.check_appendable(history_path)
    _preflight(inventory)
    found = runs.find_bundles(bundles)
    if not found:
        raise InputError(f"no bundles under {', '.join(shown(b) for b in bundles)}",
                         hint="a bundle is a folder with manifest.json and run_bundle.py")
    for b in found:  # every bundle is checked before any device sees one (runs.check_bundle)
        runs.check_bundle(b)
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=err,
                  transient=True) as progress:
        task = progress.add_task("devices", total=None)
        record = runs.run_all(inventory, found, repeats=repeats, warmup=warmup, deployment=deployment,
                              progress=lambda s: progress.update(task, description=_line(s, 200), advance=1))
    if not record["results"]:
        raise ConfigError("no device of the inventory runs these bundles (each device's `backends` left them out)",
                          hint="check the devices' backends = [...] against the bundles' backends")
    runs.write_json(record, out / f"{record['id']}.json")
    runs.write_junit(record, out / f"{record['id']}.junit.xml")
    hist.append(history_path, record)
    from rich.table import Table

    table = Table(title=f"device run {record['id']}")
    for col in ("device", "target", "config", "status", "p50 ms", "where", "host p50", "budget", "note"):
        table.add_column(col)
    for r in record["results"]:
        p50 = (r["latency"] or {}).get("p50_ms")
        host = (r.get("host") or {}).get("p50_ms")
        table.add_row(_line(r["device"]), _line(r["target"]), _line(r["config"]), _line(r["status"]),
                      "—" if not isinstance(p50, (int, float)) else f"{p50:.3f}", _line(r["latency_where"]),
                      "—" if not isinstance(host, (int, float)) else f"{host:.3f}",
                      _line((r.get("budget") or {}).get("status", "—")), _line((r["diagnosis"] or r["reason"])[:120]))
    console.print(table)
    console.print(f"wrote {_line(out / record['id'])}.json, .junit.xml; history {_line(history_path)}")
    raise typer.Exit(runs.exit_code(record))


@app.command(epilog="Example:\n\n  edgepack device report --history device-runs/history.sqlite --out device-report")
def report(
    *,
    history: Annotated[Path, typer.Option(help="the SQLite history (opened read-only)")] = DEFAULT_HISTORY,
    out: Annotated[Path, typer.Option(help="folder for report.md and report.html")] = Path("device-report"),
    window: Annotated[int, typer.Option(min=1, max=10_000, help="baseline window: earlier runs the latest is "
                                                                "tested against")] = 5,
    alpha: Annotated[float, typer.Option(help="significance level of the latency test")] = 0.01,
) -> None:
    """Render the history as Markdown and a self-contained HTML page; flag regressions (exit 1 when any)."""
    import math

    from edgepack.devices import history as hist
    from edgepack.devices import regressions, report as rep
    from edgepack.errors import ConfigError, InputError
    from edgepack.safety import shown, write_atomic

    if not (math.isfinite(alpha) and 0 < alpha < 1):
        raise ConfigError(f"--alpha {shown(alpha, 40)} is not a significance level", hint="give 0 < alpha < 1, "
                          "e.g. --alpha 0.01")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {shown(out)} is not a folder", hint="give --out a folder for report.md and report.html")
    if not history.exists() and not history.is_symlink():
        raise InputError(f"no history at {shown(history)}", hint="run `edgepack device run ... --out DIR` first")
    data = hist.series(history)
    flags = regressions.check_all(data, window=window, alpha=alpha)
    write_atomic(out / "report.md", rep.markdown(data, flags), "report.md")
    write_atomic(out / "report.html", rep.html_page(data, flags), "report.html")
    console.print(f"wrote {_line(out / 'report.md')} and {_line(out / 'report.html')} ({len(flags)} regression flag(s))")
    for f in flags:
        console.print(f"[yellow]regression[/] {_line(f.what)} {_line(f.device)} · {_line(f.bundle)} "
                      f"\\[{_line(f.config)}]: {_line(f.detail)}", soft_wrap=True)
    raise typer.Exit(1 if flags else 0)
