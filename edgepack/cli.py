"""The edgepack command line: parse → call the pipeline → render. The only module that exits.

Exit codes: 0 every check passed, 1 a parity/budget/integrity check failed, 2 a usage, config, input or
dependency error (printed as one line with a hint; EDGEPACK_DEBUG=1 shows the traceback).
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

app = typer.Typer(
    name="edgepack",
    help="Turn a trained model into deployment bundles for phones, edge boxes and Jetsons, and prove each bundle "
    "is faithful, small and fast enough.\n\nStart with `edgepack targets` and `edgepack doctor`, then "
    "`edgepack build MODEL --target NAME --calibration RECIPE`.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def _handle_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from edgepack.errors import EdgepackError

        try:
            return fn(*args, **kwargs)
        except EdgepackError as e:
            if os.environ.get("EDGEPACK_DEBUG") == "1":
                raise
            err_console.print(f"[bold red]error:[/] {e.message}", markup=True, soft_wrap=True)
            if e.hint:
                err_console.print(f"[dim]hint:[/] {e.hint}", soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("[red]interrupted[/]: nothing was left half-written")
            raise typer.Exit(130) from None

    return wrapper


def _parse_outputs(specs: list[str] | None) -> dict[str, str]:
    from edgepack.core.kinds import KINDS
    from edgepack.errors import ConfigError

    out: dict[str, str] = {}
    for spec in specs or []:
        name, sep, kind = spec.partition("=")
        if not sep or not name or kind not in KINDS:
            raise ConfigError(f"cannot parse --output '{spec}'",
                              hint=f"use NAME=KIND with KIND one of: {', '.join(KINDS)} (e.g. --output boxes=regression)")
        out[name] = kind
    return out


def _parse_inputs(specs: list[str] | None):
    from edgepack.signature import parse_input_spec

    return tuple(parse_input_spec(s) for s in specs or [])


@app.command(
    epilog="Examples:\n\n"
    "  edgepack build model.onnx -t android-ort-int8 -c calibration/digits.toml\n\n"
    "  edgepack build model.onnx -t android-ort-int8 -c calib.npz --out dist/\n\n"
    "  edgepack build my_pkg.models:make_net --weights net.pt --input input=1x3x32x32 "
    "-t android-ort-fp32 -t android-ort-int8"
)
@_handle_errors
def build(
    model: Annotated[str, typer.Argument(help="an .onnx file, a PyTorch factory (pkg.module:fn or file.py:fn), "
                                              "a .pt2/TorchScript file (needs --trust-model-code), a .keras file "
                                              "or a SavedModel folder")],
    target: Annotated[list[str], typer.Option("--target", "-t", help="target profile name (see `edgepack targets`), "
                                                                      "path to a profile .toml, or `all`; repeatable")],
    calibration: Annotated[Optional[str], typer.Option("--calibration", "-c", help="calibration recipe (name in "
                           "calibration/ or .toml path) or an .npz/.npy file with arrays keyed by input name")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="output root: bundles go to OUT/<model>/<target>/")] = Path("dist"),
    input_spec: Annotated[Optional[list[str]], typer.Option("--input", "-i", help="input shape NAME=1x3x224x224[:dtype] "
                          "(required for PyTorch factories; overrides ONNX dims); repeatable")] = None,
    weights: Annotated[Optional[str], typer.Option(help="PyTorch state dict, loaded with torch.load(weights_only=True)")] = None,
    trust_model_code: Annotated[bool, typer.Option("--trust-model-code", help="allow model files that carry code "
                                "(.pt2, TorchScript, Keras Lambda/custom objects, .h5)")] = False,
    signature: Annotated[Optional[str], typer.Option(help="SavedModel signature to convert "
                                                         "(default serving_default)")] = None,
    synthetic_calibration: Annotated[bool, typer.Option("--synthetic-calibration", help="use seeded random inputs when "
                                     "no calibration data is given (flagged in every report)")] = False,
    archive: Annotated[bool, typer.Option("--archive", help="also write a deterministic OUT/<model>/<target>.zip")] = False,
    junit: Annotated[Optional[Path], typer.Option(help="write JUnit XML with one test case per budget row")] = None,
    report: Annotated[Optional[Path], typer.Option(help="write the build's JSON report here "
                                                        "(default OUT/<model>/build-report.json)")] = None,
    skip_unavailable: Annotated[bool, typer.Option("--skip-unavailable", help="skip targets whose backend is not "
                                                   "installed instead of failing")] = False,
    targets_dir: Annotated[Optional[Path], typer.Option(help="extra folder of target profiles")] = None,
    output: Annotated[Optional[list[str]], typer.Option("--output", help="declare what an output means, NAME=KIND "
                      "(scores, probabilities, regression, embedding, dense, sequence, state, other); decides its "
                      "parity metrics; repeatable")] = None,
) -> None:
    """Convert MODEL into one bundle per --target, check parity and budgets, and write reports.

    Exits 0 when every target passes, 1 when a parity or budget check fails, 2 on usage/config/input errors.
    """
    from edgepack import pipeline
    from edgepack import report as reports

    with console.status("starting…") as status:
        def progress(msg: str) -> None:
            status.update(msg)
            console.print(f"[dim]•[/] {msg}")

        results = pipeline.build(
            model, target, calibration=calibration, out=out, inputs=_parse_inputs(input_spec), weights=weights,
            trust_code=trust_model_code, signature=signature, synthetic=synthetic_calibration, archive=archive,
            skip_unavailable=skip_unavailable, targets_dir=targets_dir, outputs=_parse_outputs(output),
            progress=progress,
        )
    reports.render(console, results)
    built = [r for r in results if r.bundle]
    report_path = report or (Path(built[0].bundle).parent / "build-report.json" if built else None)
    if report_path:
        reports.write_json(results, report_path)
        console.print(f"report: {report_path}")
    if junit:
        reports.write_junit(results, junit)
    failed = [r.target for r in results if not r.passed]
    if failed:
        err_console.print(f"[bold red]failed:[/] {', '.join(failed)} (see the FAIL rows above)")
        raise typer.Exit(1)


@app.command(epilog="Example:\n\n  edgepack check dist/model/android-ort-int8")
@_handle_errors
def check(
    bundle: Annotated[Path, typer.Argument(help="a bundle folder (OUT/<model>/<target>)")],
    junit: Annotated[Optional[Path], typer.Option(help="write JUnit XML")] = None,
) -> None:
    """Re-run integrity, host parity and budgets on an existing bundle from its golden/ files."""
    from edgepack import pipeline
    from edgepack import report as reports

    with console.status("checking…"):
        result = pipeline.check(bundle, progress=lambda m: console.print(f"[dim]•[/] {m}"))
    reports.render(console, [result])
    if junit:
        reports.write_junit([result], junit)
    if not result.passed:
        raise typer.Exit(1)


@app.command(epilog="Example:\n\n  edgepack verify dist/model/android-ort-int8")
@_handle_errors
def verify(bundle: Annotated[Path, typer.Argument(help="a bundle folder")]) -> None:
    """Check every file of a bundle against the sha256 and size in its manifest (and find extra files)."""
    from edgepack import bundle as bundles

    result = bundles.verify(bundle)
    if result:
        console.print(f"[green]ok[/] {bundle}: {result.checked} files match the manifest")
        return
    for p in result.problems:
        console.print(f"[red]✗[/] {p}")
    err_console.print(f"[bold red]verify failed:[/] {len(result.problems)} problem(s) in {bundle}")
    raise typer.Exit(1)


@app.command(epilog="Example:\n\n  edgepack inspect model.onnx")
@_handle_errors
def inspect(
    model: Annotated[str, typer.Argument(help="model file or PyTorch factory")],
    input_spec: Annotated[Optional[list[str]], typer.Option("--input", "-i", help="NAME=SHAPE[:dtype]")] = None,
    weights: Annotated[Optional[str], typer.Option(help="PyTorch state dict")] = None,
    trust_model_code: Annotated[bool, typer.Option("--trust-model-code")] = False,
) -> None:
    """Show a model's I/O signature, its operator census (ONNX) and which targets can take it."""
    from rich.table import Table

    from edgepack import inspection

    info = inspection.inspect_model(model, inputs=_parse_inputs(input_spec), weights=weights,
                                    trust_code=trust_model_code)
    console.print(f"[bold]{info['name']}[/] ({info['kind']}, {info['format']})")
    for kind in ("inputs", "outputs"):
        for t in info[kind]:
            console.print(f"  {kind[:-1]:6} {t['name']}: {'x'.join('?' if d is None else str(d) for d in t['shape'])} {t['dtype']}")
    if info.get("ops"):
        console.print("  ops: " + ", ".join(f"{k}×{v}" for k, v in info["ops"].items()))
    t = Table(title="targets", title_justify="left")
    for col in ("target", "backend", "precision", "can take it", "why"):
        t.add_column(col, no_wrap=col in ("target", "backend", "precision"), overflow="fold")
    for row in info["targets"]:
        t.add_row(row["target"], row["backend"], row["precision"], "[green]yes[/]" if row["ok"] else "[red]no[/]", row["why"])
    console.print(t)


@app.command(epilog="Example:\n\n  edgepack targets --targets-dir my_targets/")
@_handle_errors
def targets(targets_dir: Annotated[Optional[Path], typer.Option(help="extra folder of profiles")] = None) -> None:
    """List target profiles: backend, precision, device, budgets and whether their backend is installed."""
    from rich.table import Table

    from edgepack import inspection

    t = Table(title="target profiles", title_justify="left")
    for col in ("target", "backend", "precision", "device", "budgets", "available"):
        t.add_column(col, no_wrap=col in ("target", "backend", "precision"), overflow="fold")
    for row in inspection.list_targets(targets_dir):
        avail = "[green]yes[/]" if row["available"] else f"[red]no[/] ({row['why']})"
        t.add_row(row["target"], row["backend"], row["precision"], row["device"], row["budgets"], avail)
    console.print(t)


@app.command(epilog="Example:\n\n  edgepack schema --out docs/schema")
@_handle_errors
def schema(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for the JSON Schema files")] = Path("docs/schema"),
    check: Annotated[bool, typer.Option("--check", help="exit 1 if the files in OUT differ from this edgepack's "
                                        "schemas (CI)")] = False,
) -> None:
    """Write (or --check) the JSON Schema of manifest.json, report.json and build-report.json."""
    from edgepack import schemas

    stale = schemas.check(out) if check else schemas.write(out)
    if check and stale:
        for name in stale:
            err_console.print(f"[red]✗[/] {out / name} is out of date")
        err_console.print("[bold red]schema check failed:[/] run `edgepack schema --out " + str(out) + "`")
        raise typer.Exit(1)
    console.print(f"[green]ok[/] schemas in {out} " + ("match" if check else "written"))


@app.command()
@_handle_errors
def doctor() -> None:
    """Which backends and runtimes are installed, their versions, and how to install what is missing."""
    from rich.table import Table

    from edgepack import inspection

    t = Table(title="backends", title_justify="left")
    for col in ("backend", "status", "packages", "install"):
        t.add_column(col)
    for row in inspection.doctor():
        t.add_row(row["backend"], "[green]ready[/]" if row["ready"] else "[red]missing[/]", row["versions"], row["install"])
    console.print(t)
    console.print(f"python {sys.version.split()[0]} · edgepack {inspection.edgepack_version()}")


from edgepack.devices.cli import app as _device_app  # noqa: E402 - typer + rich only; commands import lazily

app.add_typer(_device_app, name="device")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
