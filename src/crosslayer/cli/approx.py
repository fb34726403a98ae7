"""``crosslayer approx``: list approximate multipliers, load truth tables, evaluate and select per layer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from crosslayer.cli.common import DataDirOpt, JsonOpt, OutOpt, SeedOpt, console, emit, handle_errors, setup_logging

approx_app = typer.Typer(help="Approximate 8-bit multipliers: library, truth tables, emulation, selection.",
                         no_args_is_help=True)

TableOpt = typer.Option(None, "--table", help="Extra multiplier from a 256x256 truth-table file "
                                              "(.npy/.csv/.txt), as PATH or PATH:RELATIVE_POWER; repeatable.")
WeightsOpt = typer.Option(None, "--weights", help="State dict of --model to evaluate (weights_only=True).")
RunOpt = typer.Option(None, "--run", help="Run directory of `crosslayer flow`; its last model is used.")
ModelOpt = typer.Option("lenet5", "--model", "-m", help="Architecture for --weights.")
TestLimitOpt = typer.Option(0, "--test-limit", help="Use only the first N test images (0 = all).")


def register(app: typer.Typer) -> None:
    app.add_typer(approx_app, name="approx")


def _multipliers(names: str | None, tables: list[str] | None) -> list[Any]:
    from crosslayer.approx import DEFAULT_NAMES, library
    from crosslayer.approx.stage import load_tables

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


def _load_model(run: Path | None, model: str, weights: Path | None, data: Any) -> Any:
    from crosslayer.errors import ConfigError
    from crosslayer.flow import load_run_model
    from crosslayer.models import build_model, load_weights

    if (run is None) == (weights is None):
        raise ConfigError("give exactly one of --run RUN_DIR or --weights STATE_DICT")
    if run is not None:
        return load_run_model(run)
    assert weights is not None
    c, h, _ = data.input_shape
    net = build_model(model, num_classes=data.num_classes, in_channels=c, image_size=h)
    load_weights(net, weights)
    return net


def _prepare(run: Path | None, model: str, weights: Path | None, data_dir: str | None, test_limit: int,
             seed: int) -> tuple[Any, Any, list[str]]:
    from crosslayer.approx import approximable_layers
    from crosslayer.approx.stage import ensure_int8
    from crosslayer.data import load_splits
    from crosslayer.train import seed_everything

    seed_everything(seed)
    splits = load_splits("mnist", data_dir, seed=seed, test_limit=test_limit or None)
    net = _load_model(run, model, weights, splits)
    q, note = ensure_int8(net, splits.train.images[:1000])
    if note:
        console.print(f"[yellow]note:[/] {note}")
    return q.eval(), splits, approximable_layers(q)


def _parse_assign(assign: str, layers: list[str]) -> dict[str, str]:
    from crosslayer.errors import ConfigError

    out = {}
    for item in filter(None, (s.strip() for s in assign.split(","))):
        layer, sep, mult = item.partition("=")
        if not sep:
            raise ConfigError(f"--assign item {item!r} must be LAYER=MULTIPLIER; layers: {', '.join(layers)}")
        out[layer.strip()] = mult.strip()
    return out


@approx_app.command("eval")
@handle_errors
def eval_cmd(
    multiplier: str = typer.Option(None, "--multiplier", help="One multiplier for every layer."),
    assign: str = typer.Option("", "--assign", help="Per layer: conv1=drum4,fc1=trunc6 (others exact)."),
    table: str = typer.Option(None, "--table", help="Truth-table file to use as --multiplier instead of a name."),
    run: Path = RunOpt, model: str = ModelOpt, weights: Path = WeightsOpt, test_limit: int = TestLimitOpt,
    data_dir: str = DataDirOpt, seed: int = SeedOpt, as_json: bool = JsonOpt, out: Path = OutOpt,
) -> None:
    """Test accuracy of a quantized model with approximate multipliers (uniform or per layer)."""
    setup_logging(False)
    from crosslayer.approx import approximate_model, assignment_of, load_table, resolve
    from crosslayer.errors import ConfigError
    from crosslayer.train import evaluate

    q, splits, layers = _prepare(run, model, weights, data_dir, test_limit, seed)
    chosen: dict[str, Any] = dict(_parse_assign(assign, layers))
    if table is not None:
        chosen.update({n: load_table(table) for n in layers if n not in chosen})
    elif multiplier is not None:
        chosen.update({n: resolve(multiplier) for n in layers if n not in chosen})
    if not chosen:
        raise ConfigError("say which multiplier: --multiplier NAME, --table FILE or --assign LAYER=NAME,...")
    approx = approximate_model(q, {n: chosen.get(n, "exact") for n in layers})
    exact = approximate_model(q, {n: "exact" for n in layers})
    acc, ref = evaluate(approx, splits.test).accuracy, evaluate(exact, splits.test).accuracy
    res = {"test_accuracy": acc, "exact_int8_test_accuracy": ref, "accuracy_loss_pp": 100 * (ref - acc),
           "test_samples": len(splits.test), "assignment": assignment_of(approx)}
    _write(out, "approx_eval.json", res)
    emit(res, as_json, title="approximate evaluation")


@approx_app.command("select")
@handle_errors
def select_cmd(
    budget: float = typer.Option(0.5, "--budget", help="Allowed accuracy loss in percentage points."),
    confidence: float = typer.Option(0.99, "--confidence", help="One-sided confidence of the acceptance rule: "
                                     "loss + paired standard-error margin <= budget (0.5 = no margin)."),
    names: str = typer.Option(None, "--names", help="Candidate multipliers, comma-separated (default: the "
                                                    "built-in library)."),
    table: list[str] = TableOpt, select_limit: int = typer.Option(1000, "--select-limit",
                                                                  help="Validation images used to select."),
    run: Path = RunOpt, model: str = ModelOpt, weights: Path = WeightsOpt, test_limit: int = TestLimitOpt,
    data_dir: str = DataDirOpt, seed: int = SeedOpt, as_json: bool = JsonOpt, out: Path = OutOpt,
) -> None:
    """Greedy per-layer selection: the cheapest multiplier per layer within the accuracy budget."""
    setup_logging(False)
    from crosslayer.approx import (
        approximate_model,
        as_accuracy,
        assignment_of,
        greedy_select,
        layer_macs,
        per_layer_sweep,
        sensitivity_ranking,
    )
    from crosslayer.approx.select import correct_on
    from crosslayer.config import check_range
    from crosslayer.train import evaluate

    check_range("--budget", budget, 0.0, 100.0)
    check_range("--confidence", confidence, 0.5, 1.0, hi_open=True)
    q, splits, layers = _prepare(run, model, weights, data_dir, test_limit, seed)
    mults = _multipliers(names, table)
    val = splits.val.subset(select_limit) if select_limit else splits.val
    score = correct_on(val)
    exact = approximate_model(q, {n: "exact" for n in layers})
    ref = score(exact)
    sweep = per_layer_sweep(q, mults, score)
    ranking = sensitivity_ranking(sweep, as_accuracy(ref))
    sel = greedy_select(q, mults, ranking, score, budget_pp=budget, macs=layer_macs(q, splits.test.images[:1]),
                        reference=ref, single_layer={(p.layer, p.multiplier): p.accuracy for p in sweep},
                        confidence=confidence)
    approx = approximate_model(q, {n: sel.assignment.get(n, "exact") for n in layers})
    acc, ref_test = evaluate(approx, splits.test).accuracy, evaluate(exact, splits.test).accuracy
    assigned = assignment_of(approx)
    res = {"assignment": assigned, "ranking": ranking, "power_saving": sel.power_saving,
           "test_accuracy": acc, "exact_int8_test_accuracy": ref_test, "accuracy_loss_pp": 100 * (ref_test - acc),
           "selection_accuracy_loss_pp": sel.loss_pp, "selection_margin_pp": sel.margin_pp,
           "confidence": confidence, "selection_images": len(val), "evaluations": sel.evaluations}
    _write(out, "approx_select.json", res)
    emit(res, as_json, title="multiplier selection")
    if not as_json:
        for n, a in assigned.items():
            console.print(f"{n}: {a['name']} (relative power {a['relative_power']:.3f})")
