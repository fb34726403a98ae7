"""``crosslayer approx``: list approximate multipliers, load truth tables, evaluate and select per layer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from crosslayer.cli.common import (
    DataDirOpt,
    DatasetOpt,
    JsonOpt,
    ModelOpt,
    OutOpt,
    RunDirArg,
    SeedOpt,
    StageOpt,
    WeightsOpt,
    console,
    emit,
    handle_errors,
    model_source,
    setup_logging,
)

approx_app = typer.Typer(help="Approximate 8-bit multipliers: library, truth tables, emulation, selection.",
                         no_args_is_help=True)

TableOpt = typer.Option(None, "--table", help="Extra multiplier from a 256x256 truth-table file "
                                              "(.npy/.csv/.txt), as PATH or PATH:RELATIVE_POWER; repeatable.")
RunOpt = typer.Option(None, "--run", hidden=True, help="Same as RUN_DIR (older spelling).")
TestLimitOpt = typer.Option(0, "--test-limit", help="Use only the first N test images (0 = all).")


def register(app: typer.Typer) -> None:
    app.add_typer(approx_app, name="approx")


def _multipliers(names: str | None, tables: list[str] | None) -> list[Any]:
    from crosslayer.approx import DEFAULT_NAMES, library
    from crosslayer.approx.api import load_tables

    picked = tuple(n.strip() for n in names.split(",") if n.strip()) if names else DEFAULT_NAMES
    return library(picked) + load_tables(tuple(tables or ()))


def _row(m: Any) -> dict[str, Any]:
    from crosslayer.approx import uniform_metrics

    return {"name": m.name, "relative_power": m.relative_power, "signed_table": m.signed,
            **uniform_metrics(m).as_dict(), "description": m.description, "power_source": m.source}


def _print_rows(rows: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for c in ("name", "relative_power", "med", "mred", "wce", "error_rate", "bias"):
        t.add_column(c, justify="left" if c == "name" else "right")
    for r in rows:
        t.add_row(r["name"], *(f"{r[c]:.4g}" for c in ("relative_power", "med", "mred", "wce", "error_rate", "bias")))
    Console().print(t)


def _write(out: Path | None, name: str, data: dict[str, Any]) -> None:
    if out is not None:
        from crosslayer.fileio import atomic_write_json, ensure_writable_dir

        path = atomic_write_json(ensure_writable_dir(out) / name, data)
        console.print(f"wrote {path}")


@approx_app.command("list")
@handle_errors
def list_cmd(
    names: str = typer.Option(None, "--names", help="Comma-separated multiplier names (default: the built-in "
                                                    "library; families: drum<k>, trunc<v>, bam_h<h>_v<v>, "
                                                    "ppp<s>_<c>, etm<l>)."),
    table: list[str] = TableOpt, as_json: bool = JsonOpt, out: Path = OutOpt,
) -> None:
    """List multipliers with their error metrics over uniform 8-bit operands and relative power."""
    setup_logging(False)
    rows = [_row(m) for m in _multipliers(names, table)]
    _write(out, "multipliers.json", {"multipliers": rows})
    if as_json:
        emit({"multipliers": rows}, True)
    else:
        _print_rows(rows, "approximate multipliers (uniform operands)")


@approx_app.command("load")
@handle_errors
def load_cmd(
    path: Path = typer.Argument(..., help="Truth-table file: .npy, or text/CSV (256x256, 65536 values, or a b p)."),
    signed: bool = typer.Option(False, "--signed", help="Rows/columns are operands -128..127 (else 0..255)."),
    power: float = typer.Option(None, "--power", help="Relative power of this multiplier (exact = 1)."),
    save: Path = typer.Option(None, "--save", help="Also write the validated table here (.npy or .csv)."),
    as_json: bool = JsonOpt,
) -> None:
    """Validate a truth-table file and print its error metrics."""
    setup_logging(False)
    from crosslayer.approx import load_table, save_table

    m = load_table(path, signed=signed or None, relative_power=power)
    if save is not None:
        save_table(save, m)
    row = _row(m)
    if as_json:
        emit(row, True)
    else:
        _print_rows([row], f"truth table {path}")


def _context(run_dir: Path | None, run: Path | None, stage: str | None, model: str | None, weights: Path | None,
             dataset: str | None, data_dir: str | None, seed: int) -> Any:
    """The model and data of the shared model options (RUN_DIR, or --model with --weights)."""
    from crosslayer.errors import ConfigError

    if run is not None and run_dir is not None:
        raise ConfigError("give the run directory once (RUN_DIR or --run)")
    return model_source(run_dir or run, stage=stage, model=model, weights=weights, dataset=dataset,
                        data_dir=data_dir, seed=seed, device="cpu").context("approximate")


@approx_app.command("eval")
@handle_errors
def eval_cmd(
    run_dir: Path = RunDirArg,
    multiplier: str = typer.Option(None, "--multiplier", help="One multiplier for every layer."),
    assign: str = typer.Option("", "--assign", help="Per layer: conv1=drum4,fc1=trunc6 (others exact)."),
    table: str = typer.Option(None, "--table", help="Truth-table file to use as --multiplier instead of a name."),
    run: Path = RunOpt, stage: str = StageOpt, model: str = ModelOpt, weights: Path = WeightsOpt,
    dataset: str = DatasetOpt, test_limit: int = TestLimitOpt, data_dir: str = DataDirOpt, seed: int = SeedOpt,
    as_json: bool = JsonOpt, out: Path = OutOpt,
) -> None:
    """Test accuracy of a quantized model with approximate multipliers (uniform or per layer)."""
    setup_logging(False)
    from crosslayer.approx import load_table, resolve
    from crosslayer.approx.api import evaluate_assignment
    from crosslayer.errors import ConfigError

    chosen: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in assign.split(","))):
        layer, sep, mult = item.partition("=")
        if not sep:
            raise ConfigError(f"--assign item {item!r} must be LAYER=MULTIPLIER")
        chosen[layer.strip()] = resolve(mult.strip())
    default: Any = load_table(table) if table is not None else resolve(multiplier) if multiplier else "exact"
    if not chosen and default == "exact":
        raise ConfigError("say which multiplier: --multiplier NAME, --table FILE or --assign LAYER=NAME,...")
    ctx = _context(run_dir, run, stage, model, weights, dataset, data_dir, seed)
    res = evaluate_assignment(ctx.model, chosen, ctx.data, default=default, test_limit=test_limit)
    for note in res.notes:
        console.print(f"[yellow]note:[/] {note}")
    out_metrics = {"test_accuracy": res.accuracy, "exact_int8_test_accuracy": res.exact_accuracy,
                   "accuracy_loss_pp": res.accuracy_loss_pp, "test_samples": res.images, "assignment": res.assignment}
    _write(out, "approx_eval.json", out_metrics)
    emit(out_metrics, as_json, title="approximate evaluation")


@approx_app.command("select")
@handle_errors
def select_cmd(
    run_dir: Path = RunDirArg,
    budget: float = typer.Option(0.5, "--budget", help="Allowed accuracy loss in percentage points."),
    confidence: float = typer.Option(0.99, "--confidence", help="One-sided confidence of the acceptance rule: "
                                     "loss + paired standard-error margin <= budget (0.5 = no margin)."),
    names: str = typer.Option(None, "--names", help="Candidate multipliers, comma-separated (default: the "
                                                    "built-in library)."),
    table: list[str] = TableOpt, select_limit: int = typer.Option(1000, "--select-limit",
                                                                  help="Validation images used to select."),
    run: Path = RunOpt, stage: str = StageOpt, model: str = ModelOpt, weights: Path = WeightsOpt,
    dataset: str = DatasetOpt, test_limit: int = TestLimitOpt, data_dir: str = DataDirOpt, seed: int = SeedOpt,
    as_json: bool = JsonOpt, out: Path = OutOpt,
) -> None:
    """Greedy per-layer selection: the cheapest multiplier per layer within the accuracy budget."""
    setup_logging(False)
    from crosslayer.approx import DEFAULT_NAMES
    from crosslayer.approx.api import ApproximateConfig, approximate
    from crosslayer.config import from_mapping

    picked = [n.strip() for n in names.split(",") if n.strip()] if names else list(DEFAULT_NAMES)
    cfg = from_mapping(ApproximateConfig, {
        "multipliers": picked, "truth_tables": list(table or ()), "budget_pp": budget, "confidence": confidence,
        "select_limit": select_limit, "test_limit": test_limit, "cured": []}, section="approx select")
    ctx = _context(run_dir, run, stage, model, weights, dataset, data_dir, seed)
    res = approximate(ctx.model, cfg, ctx.data, seed=seed)
    if res.int8_note:
        console.print(f"[yellow]note:[/] {res.int8_note}")
    sel = res.selection
    out_metrics = {"assignment": res.assignment, "ranking": res.ranking, "power_saving": res.power_saving,
                   "test_accuracy": res.test_accuracy, "exact_int8_test_accuracy": res.exact_int8_test_accuracy,
                   "accuracy_loss_pp": res.accuracy_loss_pp, "selection_accuracy_loss_pp": sel.loss_pp,
                   "selection_margin_pp": sel.margin_pp, "confidence": confidence,
                   "selection_images": res.selection_images, "evaluations": sel.evaluations}
    _write(out, "approx_select.json", out_metrics)
    emit(out_metrics, as_json, title="multiplier selection")
    if not as_json:
        for n, a in res.assignment.items():
            console.print(f"{n}: {a['name']} (relative power {a['relative_power']:.3f})")
