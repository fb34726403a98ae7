"""benchmarks/deploy.py keeps the figures of a run whose fine-tuning recipe a later run replaced."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
deploy = importlib.import_module("deploy")

OLD_FT = {"epochs": 4, "images": 20000, "seed": 0}
NEW_FT = {"epochs": 6, "images": 54000, "seed": 1}


def _results(ft: dict[str, int], ratio: float) -> dict[str, object]:
    return {"structured_finetune": ft, "best_variant": "int8 structured 20% torch.ao FX",
            "best_throughput_ratio": ratio,
            "variants": {"fp32 structured 30% ONNX Runtime": {"val_loss_pp": 1.12, "accuracy_loss_pp": 0.65,
                                                              "throughput_ratio_vs_fp32_pytorch": 4.23,
                                                              "test_accuracy": 0.92}}}


def test_a_new_recipe_keeps_the_replaced_runs_headline_rows(tmp_path: Path) -> None:
    path = tmp_path / "deploy_resnet20.json"
    assert deploy.earlier_runs(path, NEW_FT) == []
    path.write_text(json.dumps(_results(OLD_FT, 2.68)))
    rows = deploy.earlier_runs(path, NEW_FT)
    assert len(rows) == 1
    assert rows[0]["structured_finetune"] == OLD_FT and rows[0]["best_throughput_ratio"] == 2.68
    assert rows[0]["variants"]["fp32 structured 30% ONNX Runtime"] == {
        "val_loss_pp": 1.12, "accuracy_loss_pp": 0.65, "throughput_ratio_vs_fp32_pytorch": 4.23}
    # A re-run of the same recipe adds nothing, and the history already in the file is carried on.
    path.write_text(json.dumps({**_results(NEW_FT, 3.1), "earlier_runs": rows}))
    assert deploy.earlier_runs(path, NEW_FT) == rows
