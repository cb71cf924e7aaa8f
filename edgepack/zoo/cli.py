"""``edgepack zoo``: plan, build, report, matrix and merge a zoo of models × targets.

Mounted by ``edgepack.cli`` as a sub-app (wrapped in the build's error handler); everything heavy is imported
inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

app = typer.Typer(name="zoo", help="Many models × targets: plan, build (locally or on Ray, with a content-addressed "
                  "cache), one dashboard, CI matrices.", no_args_is_help=True, add_completion=False,
                  rich_markup_mode="markdown", pretty_exceptions_enable=False)
console = Console(highlight=False)
err = Console(stderr=True, highlight=False)

COLOUR = {"passed": "green", "skipped": "yellow", "failed": "red", "inconclusive": "magenta", "error": "red",
          "refused": "red", "infra": "blue", "build": "green", "skip": "yellow", "refuse": "red"}


def _line(text: object, limit: int = 2000) -> str:
    from rich.markup import escape

    from edgepack.safety import shown

    return escape(shown(text, limit))


def _plan(zoo_file: Path, cell: str | None = None):
    from edgepack.zoo import cells, spec

    zoo = spec.load(zoo_file)
    if cell is not None and "/" not in cell:
        from edgepack.errors import ConfigError

        raise ConfigError(f"--cell '{cell}' is not MODEL/TARGET", hint="`edgepack zoo plan` lists the cell ids")
    return zoo, cells.plan(zoo, only=cell.split("/", 1)[0] if cell else None)


@app.command(epilog="Example:\n\n  edgepack zoo plan zoo.toml --json plan.json")
def plan(
    zoo_file: Annotated[Path, typer.Argument(help="the zoo file (zoo.toml)")],
    *,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="also write the plan as JSON here (`-` for "
                                                                    "stdout)")] = None,
) -> None:
    """Every cell (model × target): build, skip or refuse and why, and its content key. Exits 2 when a cell
    would be refused."""
    import sys

    from rich.table import Table

    from edgepack.safety import writable_file_option, write_atomic

    if json_out is not None and str(json_out) != "-":
        writable_file_option(json_out, "--json")
    _, the_plan = _plan(zoo_file)
    if json_out is not None and str(json_out) == "-":
        sys.stdout.write(the_plan.to_json())
    else:
        t = Table(title=f"zoo plan for {_line(zoo_file)}", title_justify="left")
        for col in ("cell", "backend", "precision", "action", "key", "reason"):
            t.add_column(col, overflow="fold", no_wrap=col != "reason")
        for c in the_plan.cells:
            t.add_row(_line(c.id), c.backend, c.precision, f"[{COLOUR[c.action]}]{c.action}[/]", c.key[:12] or "—",
                      _line(c.reason or ""))
        console.print(t)
        if json_out is not None:
            write_atomic(json_out, the_plan.to_json(), "--json")
            console.print(f"plan: {_line(json_out)}")
    if any(c.action == "refuse" for c in the_plan.cells):
        raise typer.Exit(2)


@app.command(epilog="Examples:\n\n  edgepack zoo build zoo.toml --cache zoo-cache/ --out zoo-out/\n\n"
             "  edgepack zoo build zoo.toml --executor ray --address auto --cache s3://bucket/zoo\n\n"
             "  edgepack zoo build zoo.toml --cell tiny/linux-ort-fp32 --out zoo-out/tiny-linux-ort-fp32")
def build(
    zoo_file: Annotated[Path, typer.Argument(help="the zoo file (zoo.toml)")],
    *,
    executor: Annotated[str, typer.Option("--executor", help="local (a process pool on this machine) or ray (each "
                                          "cell a Ray task)")] = "local",
    address: Annotated[Optional[str], typer.Option("--address", help="Ray cluster to join (auto, ray://HOST:PORT, "
                       "HOST:PORT); none starts a local one on 127.0.0.1 without dashboard")] = None,
    cache: Annotated[Optional[str], typer.Option("--cache", help="bundle cache: a folder or an fsspec URL "
                     "(s3://bucket/prefix); cached cells are verified and taken, not rebuilt")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder: OUT/<model>/<target>/ bundles and "
                                      "OUT/cells/ records")] = Path("zoo-out"),
    cell: Annotated[Optional[str], typer.Option("--cell", help="build only this cell (MODEL/TARGET; one CI job "
                                                "of `edgepack zoo matrix`)")] = None,
    retries: Annotated[int, typer.Option("--retries", min=0, max=10, help="ray: times a cell whose worker or node "
                                         "was lost is retried before it ends INFRA")] = 2,
) -> None:
    """Build every cell of the zoo (the ordinary `edgepack build` per cell), taking verified bundles from the
    cache, and write the dashboard. Exits with the worst verdict: 0 pass/skip, 1 fail/inconclusive, 2 error,
    refused or infra."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgepack.errors import ConfigError
    from edgepack.zoo import dashboard, executors

    if executor not in executors.EXECUTORS:
        raise ConfigError(f"--executor {executor!r} is not one of {', '.join(executors.EXECUTORS)}",
                          hint="local needs nothing more; ray needs the scale extra")
    if address and executor != "ray":
        raise ConfigError("--address is for --executor ray", hint="add --executor ray, or drop --address")
    zoo, the_plan = _plan(zoo_file, cell)
    total = 1 if cell else len(the_plan.cells)
    with Progress(TextColumn("zoo"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task("cells", total=total)

        def done(r: dict) -> None:
            v = r.get("verdict", "error")
            extra = " · ".join(x for x in (
                f"{r['size_bytes'] / 2**20:.3f} MB" if r.get("size_bytes") else "",
                f"p50 {r['latency_p50_ms']:.3f} ms host" if r.get("latency_p50_ms") else "",
                f"cache {r.get('cache')}" if r.get("cache") != "off" else "",
                f"{r['seconds']:.1f} s" if r.get("seconds") is not None else "",
                r.get("reason") or "") if x)
            bar.console.print(f"[{COLOUR.get(v, 'red')}]{v.upper():12}[/] {_line(r['id'])}  [dim]{_line(extra)}[/]")
            for note in r.get("notes") or []:
                bar.console.print(f"             [dim]note:[/] {_line(note)}")
            bar.advance(task)

        recs = executors.build(the_plan, str(zoo.path), executor=executor, cache=cache, out=out, address=address,
                               only=cell, on_done=done, retries=retries)
    md, htm = dashboard.write(out, dashboard.records(out))
    counts = dashboard.counts(recs)
    console.print(f"{len(recs)} cell(s): " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
                  + f" · dashboard: {_line(htm)}")
    raise typer.Exit(dashboard.exit_code(recs))


@app.command(epilog="Example:\n\n  edgepack zoo report zoo-out/")
def report(out: Annotated[Path, typer.Argument(help="a zoo output folder (with cells/)")]) -> None:
    """Write OUT/zoo-report.md and OUT/zoo-report.html (model × target grid) from the cell records."""
    from edgepack.zoo import dashboard

    md, htm = dashboard.write(out, dashboard.records(out))
    console.print(f"report: {_line(md)} · {_line(htm)}")


@app.command(epilog="Example:\n\n  edgepack zoo matrix zoo.toml --format github")
def matrix(
    zoo_file: Annotated[Path, typer.Argument(help="the zoo file (zoo.toml)")],
    *,
    fmt: Annotated[str, typer.Option("--format", help="github (JSON for strategy.matrix) or gitlab "
                                     "(a parallel:matrix job)")] = "github",
) -> None:
    """The zoo's cells (those the plan does not skip) as a CI job matrix; each job runs
    `edgepack zoo build zoo.toml --cell ID`."""
    import sys

    from edgepack.errors import ConfigError
    from edgepack.zoo import dashboard

    if fmt not in ("github", "gitlab"):
        raise ConfigError(f"--format {fmt!r} is not github or gitlab", hint="--format github or --format gitlab")
    _, the_plan = _plan(zoo_file)
    sys.stdout.write(dashboard.matrix([c.id for c in the_plan.cells if c.action != "skip"], fmt, str(zoo_file)))


@app.command(epilog="Example:\n\n  edgepack zoo merge zoo-out/* --out zoo-merged/")
def merge(
    dirs: Annotated[list[Path], typer.Argument(help="zoo output folders (one per CI job)")],
    *,
    out: Annotated[Path, typer.Option("--out", "-o", help="the merged output folder")],
) -> None:
    """Merge per-cell outputs (CI jobs) into one output folder and write its dashboard. Exits with the worst
    verdict of the merged cells."""
    from edgepack.zoo import dashboard

    recs = dashboard.merge(dirs, out)
    md, htm = dashboard.write(out, recs)
    console.print(f"{len(recs)} cell(s) merged into {_line(out)} · dashboard: {_line(htm)}")
    raise typer.Exit(dashboard.exit_code(recs))


@app.command("device-run", epilog="Example (each device host joined with ray start --address HEAD:PORT "
             "--resources '{\"device:pixel7\": 1}'):\n\n  edgepack zoo device-run zoo.toml --out zoo-out/ "
             "--address HEAD:PORT")
def device_run(
    zoo_file: Annotated[Path, typer.Argument(help="the zoo file (its `devices` names the inventory)")],
    *,
    address: Annotated[str, typer.Option("--address", help="the Ray cluster the device hosts joined (auto, "
                                         "ray://HOST:PORT, HOST:PORT)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="the zoo's output folder (its bundles are run; results "
                                      "go to OUT/device-runs/)")] = Path("zoo-out"),
    devices: Annotated[Optional[Path], typer.Option("--devices", "-d", help="device inventory (default: the zoo "
                                                    "file's `devices`)")] = None,
    history: Annotated[Optional[Path], typer.Option(help="SQLite history to append to (default "
                                                    "OUT/device-runs/history.sqlite)")] = None,
    repeats: Annotated[int, typer.Option(min=1, max=100_000, help="timed runs per bundle")] = 20,
    warmup: Annotated[int, typer.Option(min=0, max=100_000, help="untimed runs first")] = 3,
) -> None:
    """Run every built bundle of the zoo on every device of the inventory, each bundle × device a Ray task pinned
    to the node that owns the device (resource `device:NAME`); JSON + JUnit per run, appended to the history.
    Exit 1 on FAIL, INCONCLUSIVE or INFRA."""
    from edgepack.devices import history as hist
    from edgepack.devices import runs
    from edgepack.devices.inventory import load_inventory
    from edgepack.errors import ConfigError, InputError
    from edgepack.zoo import dashboard, fleet, spec

    zoo = spec.load(zoo_file)
    inventory_path = devices or (Path(zoo.resolve(zoo.devices)) if zoo.devices else None)
    if inventory_path is None:
        raise ConfigError(f"{zoo_file}: no device inventory", hint="add devices = \"devices.toml\" to the zoo "
                          "file, or pass --devices FILE")
    inventory = [d for d in load_inventory(inventory_path) if d.kind != "ios"]
    if not inventory:
        raise ConfigError(f"no device to run on in {inventory_path}", hint="add a [[device]] table (docs/devices.md)")
    bundles = [out / r["bundle"] for r in dashboard.records(out) if r.get("bundle")]
    if not bundles:
        raise InputError(f"no built bundles in {out}", hint="run `edgepack zoo build` first")
    (out / "device-runs").mkdir(parents=True, exist_ok=True)
    history_path = history or out / "device-runs" / "history.sqlite"
    hist.check_appendable(history_path)

    def done(r: dict) -> None:
        console.print(f"{_line(r['status']):8} {_line(r['device'])} · {_line(hist.label(r['bundle']))} · "
                      f"{_line(r['config'])}  [dim]node {_line((r.get('node') or '—')[:12])}[/]")

    record = fleet.device_run(bundles, inventory, address=address, repeats=repeats, warmup=warmup, on_done=done)
    runs.write_json(record, out / "device-runs" / f"{record['id']}.json")
    runs.write_junit(record, out / "device-runs" / f"{record['id']}.junit.xml")
    hist.append(history_path, record)
    console.print(f"wrote {_line(out / 'device-runs' / record['id'])}.json, .junit.xml; history {_line(history_path)}")
    raise typer.Exit(runs.exit_code(record))
