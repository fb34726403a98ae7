"""Generated blocks of docs/protocol.md: the baseline accuracy every results file records, and what each results
file records about its own run (see benchmarks/render_docs.py)."""

from __future__ import annotations

from typing import Any

from _common import BASELINE_RECIPES, same_test_count
from _docgen import Loader, command_of, pct, recipe, recipe_difference, table

# (model, results file, key path of the baseline's test accuracy, key path of the training it records or None)
BASELINE_FIGURES: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...] | None], ...] = (
    ("LeNet-5", "baseline", ("mnist_lenet5", "test_accuracy"), ("mnist_lenet5", "command")),
    ("LeNet-5", "compression", ("lenet5", "baseline_accuracy"), ("lenet5", "baseline_training")),
    ("LeNet-5", "deploy", ("baseline_accuracy",), ("baseline_training",)),
    ("LeNet-5", "approx", ("float_test_accuracy",), ("training",)),
    ("LeNet-5", "hardware", ("lenet5_dense_test_accuracy",), ("lenet5_training",)),
    ("LeNet-5", "imc", ("clean_accuracy",), ("baseline_training",)),
    ("LeNet-5", "resilience", ("clean_accuracy",), ("baseline_training",)),
    ("LeNet-5", "security", ("test_accuracy",), ("baseline_training",)),
    ("LeNet-5", "quant", ("lenet5", "baseline_accuracy"), ("lenet5", "baseline_training")),
    ("LeNet-5", "memories", ("models", "lenet5", "float_test_accuracy"), ("models", "lenet5", "baseline_recipe")),
    ("LeNet-5", "search", ("baseline", "test_accuracy"), ("baseline_training",)),
    ("LeNet-300-100", "baseline", ("mnist_lenet300", "test_accuracy"), ("mnist_lenet300", "command")),
    ("LeNet-300-100", "compression", ("lenet300", "baseline_accuracy"), ("lenet300", "baseline_training")),
    ("LeNet-300-100", "prune_seeds", ("baseline_accuracy",), ("baseline_training",)),
    ("LeNet-300-100", "quant", ("lenet300", "baseline_accuracy"), ("lenet300", "baseline_training")),
)
BASELINE_SOURCES = tuple(dict.fromkeys(f for _, f, _, _ in BASELINE_FIGURES))

# The results files whose run records are listed (every benchmark's main file present in benchmarks/results/).
RECORD_SOURCES = ("baseline", "compression", "prune_seeds", "prune_to95", "deploy", "quant", "resilience", "approx",
                  "hardware", "memories", "imc", "imc_seed1", "imc_seed2", "imc_60epochs", "security", "stp",
                  "hostile_inputs", "pruning_peers", "deploy_resnet20", "search", "zoo_compress", "zoo")


# The usage line of each benchmark's docstring, for files that do not record their command.
USAGE = {
    "baseline": "python benchmarks/baseline.py", "compression": "python benchmarks/compression.py",
    "prune_seeds": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/prune_seeds.py",
    "prune_to95": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/prune_seeds.py --seeds 0 "
                  "--targets 0.5,0.7,0.8,0.85,0.88,0.9,0.92,0.94,0.95 --out prune_to95",
    "deploy": "python benchmarks/deploy.py", "quant": "python benchmarks/quant.py",
    "resilience": ".venv/bin/python benchmarks/resilience.py", "approx": ".venv/bin/python benchmarks/approx.py",
    "hardware": "python benchmarks/hardware.py",
    "imc": ".venv/bin/python benchmarks/imc.py", "security": ".venv/bin/python benchmarks/security.py",
    "stp": ".venv/bin/python benchmarks/stp.py", "hostile_inputs": "python benchmarks/hostile_inputs.py",
    "pruning_peers": "python benchmarks/_pruning_peers.py",
    "zoo_compress": "python benchmarks/zoo_compress.py report", "zoo": "python benchmarks/zoo.py",
}


def _written_by(name: str, d: dict[str, Any]) -> str:
    """The file's own command, else the benchmark's usage line (marked so)."""
    recorded = command_of(d, "")
    return f"`{recorded}`" if recorded else f"`{USAGE.get(name, name)}` (usage line)"


def _get(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        data = data[key]
    return data


def _training(value: Any) -> str:
    if isinstance(value, dict):
        return recipe(value)
    return f"`{value}`" if isinstance(value, str) and ("/" in value or value.startswith("crosslayer")) else str(value)


MODEL_KEYS = {"LeNet-5": "lenet5", "LeNet-300-100": "lenet300"}
TEST_IMAGES = 10_000  # every baseline figure of the table is on the full MNIST test set


def _cli_settings(command: str) -> dict[str, Any]:
    """The ``--option value`` pairs of a recorded ``crosslayer train`` command, as recipe keys."""
    words = command.split()
    out: dict[str, Any] = {}
    for flag, value in zip(words, [*words[1:], ""], strict=True):
        if flag.startswith("--") and value and not value.startswith("--"):
            try:
                out[flag[2:].replace("-", "_")] = float(value) if "." in value else int(value)
            except ValueError:
                out[flag[2:].replace("-", "_")] = value
    return out


def _against_recipe(model: str, training: Any) -> str:
    if isinstance(training, str) and training.startswith("crosslayer train "):
        training = _cli_settings(training)
    if not isinstance(training, dict):
        return "not comparable (no settings recorded as fields)"
    return recipe_difference(training, BASELINE_RECIPES[MODEL_KEYS[model]])


def _against_reference(accuracy: float, reference: float, is_reference: bool) -> str:
    """Whether a file's baseline is the reference training (``baseline.json``, seed 0): the same test accuracy
    on the same test split, or another training and by how much."""
    if is_reference:
        return "the reference"
    if same_test_count(accuracy, reference, TEST_IMAGES):
        return "same test accuracy"
    return f"**another training** ({100 * (accuracy - reference):+.2f} pp)"


def baselines(load: Loader) -> str:
    rows = []
    reference = {model: _get(load(name), acc) for model, name, acc, _ in BASELINE_FIGURES if name == "baseline"}
    for model, name, acc_path, train_path in BASELINE_FIGURES:
        d = load(name)
        try:
            training = _get(d, train_path) if train_path else None
        except KeyError:  # a file written before it recorded its training
            training, train_path = None, None
        accuracy = _get(d, acc_path)
        rows.append([model, f"`{name}.json`", _written_by(name, d), f"`{'.'.join(acc_path)}`",
                     pct(accuracy), _training(training) if train_path else "not recorded",
                     _against_recipe(model, training),
                     _against_reference(accuracy, reference[model], name == "baseline")])
    return "\n".join([
        "Generated from `benchmarks/results/" + ".json`, `benchmarks/results/".join(BASELINE_SOURCES) + ".json`"
        "; each row says which command wrote its file. The last column compares the file's baseline with the "
        "reference training of `baseline.json` (the recipe at seed 0, its starting weights drawn after "
        "`seed_everything(0)`): equal test accuracy on the same 10,000 test images, or another training.", "",
        table(["model", "results file", "written by", "key", "test accuracy", "training the file records",
               "against `BASELINE_RECIPES` (today's `_common.py`)", "against `baseline.json`"], rows),
    ])


def _has_key(data: Any, word: str, depth: int = 2) -> bool:
    if not isinstance(data, dict) or depth < 0:
        return False
    return any(word in str(k) or _has_key(v, word, depth - 1) for k, v in data.items() if k != "machine")


def records(load: Loader) -> str:
    rows = []
    for name in RECORD_SOURCES:
        d = load(name)
        found = [_has_key(d, "command", depth=1), isinstance(d.get("machine"), dict), _has_key(d, "seed"),
                 _has_key(d, "seconds"), _has_key(d, "settings")]
        rows.append([f"`{name}.json`", _written_by(name, d), *("yes" if f else "no" for f in found)])
    return "\n".join([
        "Generated from `benchmarks/results/<file>` for every file named in the table: which of them record their "
        "command, the machine "
        "(`_common.write_results` adds it), a seed, wall time and a `settings` section. A column counts a key whose "
        "name contains the column's word in the first two levels of the file (the command: the first level or one "
        "below it, e.g. `settings.command` or one per entry); seeds kept only as the keys of a table (`runs`) are "
        "not counted.", "",
        table(["results file", "written by", "`command`", "`machine`", "`seed`", "`seconds`", "`settings`"], rows),
    ])
