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


def _fail(message: str, hint: str = "", code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    if hint:
        err.print(f"[dim]hint:[/] {hint}", soft_wrap=True)
    raise typer.Exit(code)


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

    if name not in emu.EMULATED:
        _fail(f"unknown emulated device '{name}'", f"one of: {', '.join(emu.EMULATED)}")
    t0 = time.monotonic()
    try:
        py = emu.setup(emu.EMULATED[name], force=force, log=(lambda s: console.print(s, markup=False)) if verbose
                       else (lambda s: None))
    except emu.SetupError as e:
        _fail(str(e), "see docs/devices.md (arm64-emu)")
    console.print(f"{name}: ready in {time.monotonic() - t0:.1f} s → {py}")


@app.command(epilog="Example:\n\n  edgepack device run dist --devices devices.toml --out device-runs")
def run(
    bundles: Annotated[list[Path], typer.Argument(help="bundle folders, or folders containing bundles")],
    *,
    devices: Annotated[Path, typer.Option("--devices", "-d", help="the device inventory (TOML)")],
    out: Annotated[Path, typer.Option("--out", help="folder for <run id>.json and .junit.xml")] = Path("device-runs"),
    history: Annotated[Optional[Path], typer.Option(help="SQLite history to append to (default OUT/history.sqlite)")]
    = None,
    repeats: Annotated[int, typer.Option(min=1, help="timed runs per bundle")] = 20,
    warmup: Annotated[int, typer.Option(min=0, help="untimed runs first")] = 3,
    only: Annotated[Optional[list[str]], typer.Option("--device", help="run only these devices (by name)")] = None,
    deployment: Annotated[bool, typer.Option(help="also run the deployment configuration where it differs")] = True,
) -> None:
    """Run every bundle on every device; write JSON + JUnit, append to the history. Exit 1 on FAIL, INCONCLUSIVE or INFRA."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from edgepack.devices import history as hist
    from edgepack.devices import runs
    from edgepack.devices.inventory import InventoryError, load_inventory

    try:
        inventory = load_inventory(devices)
    except InventoryError as e:
        _fail(str(e), "fix the inventory: docs/devices.md lists each device kind and its keys")
    if only:
        unknown = set(only) - {d.name for d in inventory}
        if unknown:
            _fail(f"no device named {', '.join(sorted(unknown))} in {devices}")
        inventory = [d for d in inventory if d.name in only]
    found = runs.find_bundles(bundles)
    if not found:
        _fail(f"no bundles under {', '.join(map(str, bundles))}", "a bundle is a folder with manifest.json and run_bundle.py")
    from edgepack.errors import EdgepackError

    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=err,
                      transient=True) as progress:
            task = progress.add_task("devices", total=None)
            record = runs.run_all(inventory, found, repeats=repeats, warmup=warmup, deployment=deployment,
                                  progress=lambda s: progress.update(task, description=s, advance=1))
    except EdgepackError as e:  # a bundle refused before anything was pushed (runs.verify_before_push)
        from rich.markup import escape

        from edgepack.safety import shown

        _fail(escape(shown(e.message, 2000)), escape(shown(e.hint or "", 500)))
    runs.write_json(record, out / f"{record['id']}.json")
    runs.write_junit(record, out / f"{record['id']}.junit.xml")
    hist.append(history or out / "history.sqlite", record)
    from rich.table import Table

    table = Table(title=f"device run {record['id']}")
    for col in ("device", "target", "config", "status", "p50 ms", "where", "host p50", "budget", "note"):
        table.add_column(col)
    for r in record["results"]:
        p50 = (r["latency"] or {}).get("p50_ms")
        host = (r.get("host") or {}).get("p50_ms")
        table.add_row(r["device"], r["target"], r["config"], r["status"], "—" if p50 is None else f"{p50:.3f}",
                      r["latency_where"], "—" if host is None else f"{host:.3f}",
                      (r.get("budget") or {}).get("status", "—"), (r["diagnosis"] or r["reason"])[:120])
    console.print(table)
    console.print(f"wrote {out / record['id']}.json, .junit.xml; history {history or out / 'history.sqlite'}")
    raise typer.Exit(runs.exit_code(record))


@app.command(epilog="Example:\n\n  edgepack device report --history device-runs/history.sqlite --out device-report")
def report(
    *,
    history: Annotated[Path, typer.Option(help="the SQLite history")] = DEFAULT_HISTORY,
    out: Annotated[Path, typer.Option(help="folder for report.md and report.html")] = Path("device-report"),
    window: Annotated[int, typer.Option(min=1, help="baseline window: earlier runs the latest is tested against")] = 5,
    alpha: Annotated[float, typer.Option(help="significance level of the latency test")] = 0.01,
) -> None:
    """Render the history as Markdown and a self-contained HTML page; flag regressions (exit 1 when any)."""
    from edgepack.devices import history as hist
    from edgepack.devices import regressions, report as rep

    if not history.is_file():
        _fail(f"no history at {history}", "run `edgepack device run ... --out DIR` first")
    data = hist.series(history)
    flags = regressions.check_all(data, window=window, alpha=alpha)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(rep.markdown(data, flags))
    (out / "report.html").write_text(rep.html_page(data, flags))
    console.print(f"wrote {out / 'report.md'} and {out / 'report.html'} ({len(flags)} regression flag(s))")
    for f in flags:
        console.print(f"[yellow]regression[/] {f.what} {f.device} · {f.bundle} [{f.config}]: {f.detail}",
                      markup=True, soft_wrap=True)
    raise typer.Exit(1 if flags else 0)
