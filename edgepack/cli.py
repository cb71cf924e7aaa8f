"""The edgepack command line: parse → call the pipeline → render. The only module that exits.

Exit codes: 0 every check passed, 1 a parity/budget/integrity check failed or was INCONCLUSIVE (too few holdout
samples to prove a rate budget), 2 a usage, config, input or
dependency error (printed as one line with a hint; EDGEPACK_DEBUG=1 shows the traceback).
"""

from __future__ import annotations

import contextlib
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


_stage = {"name": ""}  # the stage the command is in (named by an internal error)


def _set_stage(msg: str) -> None:
    _stage["name"] = msg


def _line(text: object) -> str:
    """User text for the terminal: Rich markup escaped, control characters (newlines) shown, never interpreted."""
    from rich.markup import escape

    from edgepack.safety import shown

    return escape(shown(text, 2000))


def _handle_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from edgepack.errors import EdgepackError

        debug = os.environ.get("EDGEPACK_DEBUG") == "1"
        _stage["name"] = fn.__name__
        try:
            from edgepack.isolation import check_settings

            check_settings()  # EDGEPACK_WORKER_MEMORY_MB=abc / -1 is refused, never read as "no limit"
            return fn(*args, **kwargs)
        except EdgepackError as e:
            err_console.print(f"[bold red]error:[/] {_line(e.message)}", markup=True, soft_wrap=True)
            if e.hint:
                err_console.print(f"[dim]hint:[/] {_line(e.hint)}", soft_wrap=True)
            if debug:  # the full story, same exit code
                import traceback

                if e.details:
                    err_console.print("--- full message ---", markup=False, highlight=False)
                    err_console.print(e.details, markup=False, highlight=False, soft_wrap=True)
                err_console.print("".join(traceback.format_exception(e)), markup=False, highlight=False,
                                  soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt as e:
            from edgepack import bundle as bundles
            from edgepack.isolation import kill_all

            kill_all()
            bundles.discard_all()
            signum = getattr(e, "signum", 2)
            err_console.print(f"[bold red]error:[/] interrupted ({'SIGTERM' if signum == 15 else 'SIGINT'}) in "
                              f"{_line(_stage['name'] or fn.__name__)}: workers stopped, staging removed", soft_wrap=True)
            err_console.print("[dim]hint:[/] nothing was left half-written; run the command again", soft_wrap=True)
            raise typer.Exit(128 + signum) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001 - a bug: one line and a hint, the traceback only when asked for
            from edgepack import bundle as bundles

            bundles.discard_all()
            err_console.print(f"[bold red]error:[/] internal error in {_line(_stage['name'] or fn.__name__)} "
                              f"({_line(type(e).__name__)})", soft_wrap=True)
            err_console.print("[dim]hint:[/] this is a bug in edgepack: rerun with EDGEPACK_DEBUG=1 for the "
                              "traceback and report it", soft_wrap=True)
            if debug:  # the traceback, same exit code
                import traceback

                err_console.print("".join(traceback.format_exception(e)), markup=False, highlight=False,
                                  soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _parse_outputs(specs: list[str] | None) -> dict:
    from edgepack.core import outspec
    from edgepack.core.kinds import KINDS
    from edgepack.errors import ConfigError

    out = {}
    for spec in specs or []:
        try:
            name, parsed = outspec.parse_declaration(spec)
        except ValueError as e:
            raise ConfigError(f"cannot parse --output '{spec}': {e}",
                              hint=f"use NAME=KIND[,batch_axis=N|none] with KIND one of: {', '.join(KINDS)}, or "
                                   "channel groups NAME=regression[0:4]+scores[4:22],axis=1") from None
        out[name] = parsed
    return out


def _parse_inputs(specs: list[str] | None):
    from edgepack.signature import parse_input_spec

    return tuple(parse_input_spec(s) for s in specs or [])


def _budgets(specs: list[str] | None, model_config: Path | None) -> tuple[dict, dict]:
    """The build's budgets (key → value) and where each came from: the model config's [budgets] table, overridden
    by --budget KEY=VALUE."""
    from edgepack.config import layered_budgets, parse_budget
    from edgepack.signature import model_config_budgets

    table = {} if model_config is None else model_config_budgets(str(model_config))
    return layered_budgets((table, f"model config {model_config}"),
                           (dict(parse_budget(spec) for spec in specs or []), "command line"))


def _declarations(input_spec: list[str] | None, output: list[str] | None, model_config: Path | None):
    """Input declarations and output kinds: the model config file, overridden by name on the command line."""
    from edgepack.signature import load_model_config

    inputs, outputs = ((), {}) if model_config is None else load_model_config(str(model_config))
    cli_inputs = _parse_inputs(input_spec)
    given = {t.name for t in cli_inputs}
    return tuple(t for t in inputs if t.name not in given) + cli_inputs, {**outputs, **_parse_outputs(output)}


# Options shared by `build` and `plan` (every option of build that changes the plan): one definition each.
ModelArg = Annotated[str, typer.Argument(help="an .onnx file, a PyTorch factory (pkg.module:fn or file.py:fn), "
                                              "a .pt2/TorchScript file (needs --trust-model-code), a .keras file "
                                              "or a SavedModel folder")]
TargetOpt = Annotated[list[str], typer.Option("--target", "-t", help="target profile name (see `edgepack targets`), "
                                                                      "path to a profile .toml, or `all`; repeatable")]
CalibrationOpt = Annotated[Optional[str], typer.Option("--calibration", "-c", help="calibration recipe (name in "
                           "calibration/ or .toml path) or an .npz/.npy file with arrays keyed by input name; "
                           "split three ways, seeded: holdout (the verdict, disjoint; half the data), calibration "
                           "(ranges; every other sample) and tuning (the INT8 accuracy search; may overlap "
                           "calibration)")]
HoldoutOpt = Annotated[Optional[str], typer.Option("--holdout", help="a separate holdout set (recipe or .npz/.npy, "
                       "with 'labels' if any): all of it judges the bundles; --calibration then gives calibration "
                       "and tuning only")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="output root: bundles go to "
                                                         "OUT/\\<model\\>/\\<target\\>/")]
InputOpt = Annotated[Optional[list[str]], typer.Option("--input", "-i", help="declare an input: "
                     "NAME=[SHAPE][:DTYPE][,batch_axis=N|none][,layout=nchw][,value=NUMBER]"
                     "[,dims=AXIS:MIN/OPT/MAX][,state=OUTPUT]. SHAPE is required for PyTorch factories and "
                     "overrides ONNX dims (empty: the model's own); value= feeds a constant (a sample rate); "
                     "state= feeds an output back (recurrent state, batch_axis=1 for (layers, B, H)); "
                     "repeatable")]
WeightsOpt = Annotated[Optional[str], typer.Option(help="PyTorch state dict, loaded with torch.load(weights_only=True); "
                       "FILE:KEY takes the state dict nested under KEY of a checkpoint (e.g. net.pt:model_state)")]
NonStrictOpt = Annotated[bool, typer.Option("--weights-non-strict", help="load --weights even when the file has "
                         "keys the model does not (e.g. a training loss's parameters; recorded in the manifest); "
                         "missing keys are still refused")]
TrustOpt = Annotated[bool, typer.Option("--trust-model-code", help="allow model files that carry code "
                     "(.pt2, TorchScript, Keras Lambda/custom objects, .h5)")]
SignatureOpt = Annotated[Optional[str], typer.Option(help="SavedModel signature to convert "
                         "(default serving_default)")]
SyntheticOpt = Annotated[bool, typer.Option("--synthetic-calibration", help="use seeded random inputs when "
                         "no calibration data is given (flagged in every report)")]
SkipOpt = Annotated[bool, typer.Option("--skip-unavailable", help="skip the targets that cannot build "
                    "this model (runtime not installed, source format not taken, unsupported ops) instead of "
                    "refusing the build; each is reported with its reason")]
TargetsDirOpt = Annotated[Optional[Path], typer.Option(help="extra folder of target profiles")]
OutputOpt = Annotated[Optional[list[str]], typer.Option("--output", help="declare what an output means, "
                      "NAME=KIND[,batch_axis=N|none][,key=value...] (KIND: scores, probabilities, regression, "
                      "embedding, dense, sequence, state, other); decides its parity metrics. batch_axis: the axis "
                      "holding the samples (e.g. 1 for a time-first (T, B, C) output; none: no batch axis). Channel "
                      "groups judged on their own: 'output0=regression[0:4]+scores[4:22],axis=1'; repeatable")]
NameOpt = Annotated[Optional[str], typer.Option("--name", help="bundle folder name: OUT/\\<name\\>/\\<target\\> "
                    "(default: the model file's name, or factory-weights for a PyTorch factory)")]
ModelConfigOpt = Annotated[Optional[Path], typer.Option("--model-config", help="TOML with [inputs.NAME] "
                           "declarations, [outputs] specs NAME = \"KIND[,batch_axis=N][,...]\" and [budgets] "
                           "(--input/--output/--budget override it by name)")]
BudgetOpt = Annotated[Optional[list[str]], typer.Option("--budget", help="the app's budget over the profiles', "
                      "KEY=VALUE: size_mb, latency_p50_ms, latency_p90_ms, int8_latency_ratio or any key of the "
                      "profiles' [budgets] (e.g. parity.min_top1_agreement=0.97); recorded with its source in the "
                      "report and manifest; repeatable")]


@app.command(
    epilog="Examples:\n\n"
    "  edgepack build model.onnx -t android-ort-int8 -c calibration/digits.toml\n\n"
    "  edgepack build model.onnx -t android-ort-int8 -c calib.npz --out dist/\n\n"
    "  edgepack build my_pkg.models:make_net --weights net.pt --input input=1x3x32x32 "
    "-t android-ort-fp32 -t android-ort-int8"
)
@_handle_errors
def build(
    model: ModelArg,
    target: TargetOpt,
    calibration: CalibrationOpt = None,
    holdout: HoldoutOpt = None,
    out: OutOpt = Path("dist"),
    input_spec: InputOpt = None,
    weights: WeightsOpt = None,
    weights_non_strict: NonStrictOpt = False,
    trust_model_code: TrustOpt = False,
    signature: SignatureOpt = None,
    synthetic_calibration: SyntheticOpt = False,
    archive: Annotated[bool, typer.Option("--archive", help="also write a deterministic "
                                          "OUT/\\<model\\>/\\<target\\>.zip")] = False,
    junit: Annotated[Optional[Path], typer.Option(help="write JUnit XML with one test case per budget row")] = None,
    report: Annotated[Optional[Path], typer.Option(help="write the build's JSON report here "
                                                        "(default OUT/\\<model\\>/build-report.json)")] = None,
    skip_unavailable: SkipOpt = False,
    targets_dir: TargetsDirOpt = None,
    allow_metric: Annotated[Optional[list[str]], typer.Option("--allow-metric", help="enable an installed "
                            "`edgepack.metrics` entry point a profile names (it runs that package's code; recorded "
                            "in the manifest); repeatable")] = None,
    output: OutputOpt = None,
    name: NameOpt = None,
    model_config: ModelConfigOpt = None,
    budget: BudgetOpt = None,
    judge: Annotated[Optional[str], typer.Option("--judge", help="how rate budgets (agreement, accuracy drop) are "
                     "judged, for every target (overrides the profiles' budgets.parity.judge): evidence (default: "
                     "INCONCLUSIVE, exit 1, when the holdout is too small to prove the budget), bound (the 95% "
                     "Wilson bound) or point (the point estimate alone)")] = None,
) -> None:
    """Convert MODEL into one bundle per --target, check parity and budgets, and write reports.

    First plans every target against the model (`edgepack plan`) and refuses — or with --skip-unavailable skips —
    the targets that cannot take it, before converting anything. An error in one target is that target's ERROR
    verdict; the others still build, and the report, JUnit file and summary cover every target.

    Exits 0 when every target passes, 1 when a parity or budget check fails or is INCONCLUSIVE (too few holdout
    samples to prove a rate budget), 2 on usage/config/input errors or when a target could not be built.
    """
    from edgepack import pipeline
    from edgepack import report as reports
    from edgepack.safety import writable_file_option

    writable_file_option(junit, "--junit")
    writable_file_option(report, "--report")
    if allow_metric:
        from edgepack.safety import check_name

        os.environ["EDGEPACK_ALLOW_METRICS"] = ",".join(check_name(m, "--allow-metric") for m in allow_metric)
    with _build_display() as progress:
        inputs, outputs = _declarations(input_spec, output, model_config)
        budgets, budget_sources = _budgets(budget, model_config)
        results = pipeline.build(
            model, target, calibration=calibration, holdout=holdout, out=out, inputs=inputs, weights=weights,
            weights_strict=not weights_non_strict, trust_code=trust_model_code, signature=signature,
            synthetic=synthetic_calibration, archive=archive, skip_unavailable=skip_unavailable,
            targets_dir=targets_dir, outputs=outputs, name=name, judge=judge, budgets=budgets,
            budget_sources=budget_sources, progress=progress,
        )
        if hasattr(progress, "finish"):  # the live display: targets the build ended without an event
            for r in results:
                progress.finish(r.target, r.status)
    reports.render(console, results)
    if len(results) > 1:
        reports.render_summary(console, results)
    model_name = next((r.source["name"] for r in results if r.source), None)
    report_path = report or (out / model_name / "build-report.json" if model_name else None)
    if report_path:
        reports.write_json(results, report_path)
        console.print(f"report: {_line(report_path)}")
    if model_name:
        from edgepack import report_html

        html_path = out / model_name / "report.html"
        report_html.write(results, html_path)
        console.print(f"html report: {_line(html_path)}")
    if junit:
        reports.write_junit(results, junit)
    _exit_for(results)


@contextlib.contextmanager
def _build_display():
    """The build's progress callback: a live display (one row per target, an overall bar with an estimate, INT8
    trials as they finish) when stdout is a terminal; else the plain lines, one per step, as CI logs have them."""
    if console.is_terminal:
        from edgepack.live import LiveBuild

        live = LiveBuild(console)

        def staged(event: str) -> None:
            _set_stage(event)
            live(event)

        staged.finish = live.finish  # type: ignore[attr-defined]
        with live:
            yield staged
        return
    with console.status("starting…") as status:
        def progress(msg: str) -> None:
            if getattr(msg, "quiet", False):  # plan, trials, verdicts: for the live display only
                return
            _set_stage(msg)
            status.update(_line(msg))
            console.print(f"[dim]•[/] {_line(msg)}")

        yield progress


def _exit_for(results) -> None:
    """Exit with the worst verdict: 2 when a target errored, 1 when a check failed, else 0."""
    from edgepack import report as reports

    code = reports.exit_code(results)
    if os.environ.get("EDGEPACK_DEBUG") == "1":
        for r in results:
            if r.details:
                err_console.print(f"--- {_line(r.target)}: full message ({_line(r.stage or '')}) ---",
                                  soft_wrap=True)
                err_console.print(r.details, markup=False, highlight=False, soft_wrap=True)
    failed = [r.target for r in results if r.status == "failed"]
    inconclusive = [r.target for r in results if r.status == "inconclusive"]
    for r in results:
        if r.status == "error":
            err_console.print(f"[bold red]error:[/] {_line(r.target)}: {_line(r.reason or '')}", soft_wrap=True)
            if r.hint:
                err_console.print(f"[dim]hint:[/] {_line(r.hint)}", soft_wrap=True)
    if failed:
        err_console.print(f"[bold red]failed:[/] {_line(', '.join(failed))} (see the FAIL rows above)", soft_wrap=True)
    if inconclusive:
        err_console.print(f"[bold magenta]inconclusive:[/] {_line(', '.join(inconclusive))} (too few holdout samples "
                          "for a rate budget: see the INCONCLUSIVE rows above; a larger holdout, or --judge point)",
                          soft_wrap=True)
    if code:
        raise typer.Exit(code)


@app.command(epilog="Examples:\n\n"
             "  edgepack plan model.onnx -t all\n\n"
             "  edgepack plan examples/digits.py:make_cnn --input input=1x1x32x32 -t all --json plan.json")
@_handle_errors
def plan(
    model: ModelArg,
    target: TargetOpt,
    input_spec: InputOpt = None,
    output: OutputOpt = None,
    model_config: ModelConfigOpt = None,
    calibration: CalibrationOpt = None,
    holdout: HoldoutOpt = None,
    synthetic_calibration: SyntheticOpt = False,
    out: OutOpt = Path("dist"),
    name: NameOpt = None,
    budget: BudgetOpt = None,
    weights: WeightsOpt = None,
    weights_non_strict: NonStrictOpt = False,
    trust_model_code: TrustOpt = False,
    signature: SignatureOpt = None,
    skip_unavailable: SkipOpt = False,
    targets_dir: TargetsDirOpt = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="also write the plan as JSON here "
                                                                    "(`-` for stdout)")] = None,
) -> None:
    """Show what `edgepack build` would do with MODEL for each target — build (and how the source gets there,
    and where the bundle goes), skip or refuse (and why) — without converting anything. Takes the options of
    `build` that change the plan: declarations (--input, --output, --model-config), budgets, the data (-c and
    --holdout are loaded and checked against the inputs) and the destination (--out, --name). Exits 2 when a
    target would be refused."""
    from rich.table import Table

    from edgepack import pipeline
    from edgepack import plan as plans
    from edgepack.safety import writable_file_option, write_atomic

    if json_out is not None and str(json_out) != "-":
        writable_file_option(json_out, "--json")  # a folder (or a path under a file) is refused before any work
    inputs, outputs = _declarations(input_spec, output, model_config)
    budgets, budget_sources = _budgets(budget, model_config)
    the_plan = pipeline.plan(model, target, inputs=inputs, weights=weights, weights_strict=not weights_non_strict,
                             trust_code=trust_model_code, signature=signature, skip_unavailable=skip_unavailable,
                             targets_dir=targets_dir, outputs=outputs, calibration=calibration, holdout=holdout,
                             synthetic=synthetic_calibration, out=out, name=name, budgets=budgets,
                             budget_sources=budget_sources)
    if json_out is not None and str(json_out) == "-":
        sys.stdout.write(the_plan.to_json())
    else:
        t = Table(title=f"plan for {_line(model)}", title_justify="left")
        for col in ("target", "backend", "precision", "action", "route", "reason"):
            t.add_column(col, overflow="fold", no_wrap=col != "reason")
        colour = {"build": "green", "skip": "yellow", "refuse": "red"}
        for r in the_plan.rows:
            t.add_row(_line(r.target), r.backend, r.precision, f"[{colour[r.action]}]{r.action}[/]", _line(r.route),
                      _line(r.reason or ""))
        console.print(t)
        hints = {r.hint: r.backend for r in the_plan.rows if r.reason and r.hint}
        for hint, backend in hints.items():
            console.print(f"[dim]{_line(backend)}:[/] {_line(hint)}", soft_wrap=True)
        built = [r.bundle for r in the_plan.rows if r.bundle]
        if built:
            console.print(f"bundles: {_line(str(Path(built[0]).parent))}/ ({len(built)} target(s))", soft_wrap=True)
        if json_out is not None:
            write_atomic(json_out, the_plan.to_json(), "--json")  # O_EXCL|O_NOFOLLOW temporary + rename
            console.print(f"plan: {_line(str(json_out))}")
    plans.refuse(the_plan)


@app.command(epilog="Example:\n\n  edgepack check dist/model/android-ort-int8")
@_handle_errors
def check(
    bundle: Annotated[Path, typer.Argument(help="a bundle folder (OUT/\\<model\\>/\\<target\\>)")],
    junit: Annotated[Optional[Path], typer.Option(help="write JUnit XML")] = None,
) -> None:
    """Re-run integrity, host parity and budgets on an existing bundle from its golden/ files."""
    from edgepack import pipeline
    from edgepack import report as reports
    from edgepack.safety import writable_file_option

    writable_file_option(junit, "--junit")
    with console.status("checking…"):
        result = pipeline.check(bundle, progress=lambda m: (_set_stage(m), console.print(f"[dim]•[/] {_line(m)}")))
    reports.render(console, [result])
    if junit:
        reports.write_junit([result], junit)
    if not result.passed:
        raise typer.Exit(1)


@app.command(epilog="Example:\n\n  edgepack verify dist/model/android-ort-int8")
@_handle_errors
def verify(
    bundle: Annotated[Path, typer.Argument(help="a bundle folder")],
    allow_failed: Annotated[bool, typer.Option("--allow-failed", help="accept a bundle whose recorded verdict is "
                                               "failed or inconclusive (its files are still checked)")] = False,
) -> None:
    """Check every file of a bundle against the sha256 and size in its manifest (and find extra files); a bundle
    whose build verdict was failed or inconclusive fails too unless --allow-failed.

    Refused outright (exit 2): symlinks, FIFOs or devices in the bundle, paths out of it (Core ML weight files
    included) and a verdict that contradicts the recorded check rows. The manifest is not signed: verify proves the
    bundle is the one its manifest describes, not who made it (docs/hostile-inputs.md)."""
    from edgepack import bundle as bundles

    result = bundles.verify(bundle, allow_failed=allow_failed)
    bundles.refuse_unsafe(result)  # symlinks, FIFOs, paths out of the bundle: refused outright (exit 2)
    if result:
        console.print(f"[green]ok[/] {_line(bundle)}: {result.checked} files match the manifest")
        return
    for p in result.problems:
        console.print(f"[red]✗[/] {_line(p)}")
    err_console.print(f"[bold red]verify failed:[/] {len(result.problems)} problem(s) in {_line(bundle)}")
    raise typer.Exit(1)


@app.command(epilog="Example:\n\n  edgepack inspect model.onnx")
@_handle_errors
def inspect(
    model: ModelArg,
    input_spec: InputOpt = None,
    weights: WeightsOpt = None,
    weights_non_strict: NonStrictOpt = False,
    trust_model_code: TrustOpt = False,
) -> None:
    """Show a model's I/O signature, its operator census (ONNX) and which targets can take it."""
    from rich.table import Table

    from edgepack import inspection

    info = inspection.inspect_model(model, inputs=_parse_inputs(input_spec), weights=weights,
                                    weights_strict=not weights_non_strict, trust_code=trust_model_code)
    console.print(f"[bold]{_line(info['name'])}[/] ({info['kind']}, {info['format']})")
    for kind in ("inputs", "outputs"):
        for t in info[kind]:
            console.print(f"  {kind[:-1]:6} {_line(t['name'])}: {'x'.join('?' if d is None else str(d) for d in t['shape'])} {t['dtype']}")
    if info.get("ops"):
        console.print("  ops: " + _line(", ".join(f"{k}×{v}" for k, v in info["ops"].items())))
    t = Table(title="targets", title_justify="left")
    for col in ("target", "backend", "precision", "can take it", "why"):
        t.add_column(col, no_wrap=col in ("target", "backend", "precision"), overflow="fold")
    for row in info["targets"]:
        t.add_row(row["target"], row["backend"], row["precision"], "[green]yes[/]" if row["ok"] else "[red]no[/]", _line(row["why"]))
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
            err_console.print(f"[red]✗[/] {_line(out / name)} is out of date")
        err_console.print("[bold red]schema check failed:[/] run `edgepack schema --out " + _line(out) + "`")
        raise typer.Exit(1)
    console.print(f"[green]ok[/] schemas in {_line(out)} " + ("match" if check else "written"))


@app.command()
@_handle_errors
def doctor() -> None:
    """Which backends and runtimes are installed, their versions, and how to install what is missing.

    Imports every installed plug-in backend (`edgepack.backends` entry points) to ask it what it needs: a plug-in
    is code, run as soon as it is installed and listed. One that fails to import is one row with its error; the
    others are still listed."""
    from rich.table import Table

    from edgepack import inspection

    t = Table(title="backends", title_justify="left")
    for col in ("backend", "status", "packages", "install"):
        t.add_column(col)
    for row in inspection.doctor():
        t.add_row(_line(row["backend"]), "[green]ready[/]" if row["ready"] else "[red]missing[/]",
                  _line(row["versions"]), _line(row["install"]))
    console.print(t)
    from edgepack.zoo import scale_extra

    scale = scale_extra()
    missing = [d for d, v in scale.items() if v is None]
    console.print("scale extra (edgepack zoo --executor ray, cache URLs): " + (
        "[green]installed[/] (" + ", ".join(f"{d} {v}" for d, v in scale.items()) + ")" if not missing else
        f"[red]missing[/] {', '.join(missing)}: pip install -c constraints.txt -e '.[scale]'"))
    console.print(f"python {sys.version.split()[0]} · edgepack {inspection.edgepack_version()}")


from edgepack.devices.cli import app as _device_app  # noqa: E402 - typer + rich only; commands import lazily

for _command in _device_app.registered_commands:  # `edgepack device …` shares the build's error contract
    _command.callback = _handle_errors(_command.callback)
app.add_typer(_device_app, name="device")

from edgepack.zoo.cli import app as _zoo_app  # noqa: E402 - typer + rich only; commands import lazily

for _command in _zoo_app.registered_commands:  # `edgepack zoo …` shares the build's error contract
    _command.callback = _handle_errors(_command.callback)
app.add_typer(_zoo_app, name="zoo")


def main() -> None:
    from edgepack.isolation import install_signal_handlers

    install_signal_handlers()
    app()


if __name__ == "__main__":
    main()
