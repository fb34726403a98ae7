"""The iterative schedule: budget logic, recorded steps, masks kept, structured steps, resuming."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from crosslayer.config import from_mapping
from crosslayer.data import DataSplits
from crosslayer.errors import ConfigError
from crosslayer.prune import IterativePruner, ScheduleConfig, rebuild_structure


@pytest.fixture(scope="module")
def tiny(mnist_small: DataSplits) -> DataSplits:
    return DataSplits(mnist_small.train.subset(1000), mnist_small.val.subset(300), mnist_small.test.subset(300))


def test_unstructured_schedule_records_steps_and_keeps_zeros(lenet300_trained: nn.Module, tiny: DataSplits) -> None:
    before = copy.deepcopy(lenet300_trained.state_dict())
    cfg = ScheduleConfig(scheme="class-uniform", targets=(0.5, 0.8), budget_pp=50.0, finetune_epochs=1)
    out = IterativePruner(lenet300_trained, tiny, cfg, seed=0).run()
    assert [h["step"] for h in out.history] == [0, 1, 2] and out.kept_step == 2
    assert out.history[0]["sparsity"] == pytest.approx(0.0, abs=1e-6)
    assert out.kept["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert set(out.kept["layer_sparsity"]) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    assert all(s == pytest.approx(0.8, abs=1e-2) for s in out.kept["layer_sparsity"].values())
    params = dict(out.model.named_parameters())
    assert all(bool((params[k][~m] == 0).all()) for k, m in out.masks.items())
    assert "all targets" in out.stop_reason
    # the input model is untouched
    assert all(torch.equal(v, lenet300_trained.state_dict()[k]) for k, v in before.items())


def test_budget_stops_and_keeps_last_point_within(lenet300_trained: nn.Module, tiny: DataSplits,
                                                  tmp_path: Path) -> None:
    cfg = ScheduleConfig(targets=(0.3, 0.999), budget_pp=1.0, finetune_epochs=0)
    state = tmp_path / "state.pt"
    state.write_bytes(b"not a torch file")  # a corrupt state is ignored, never trusted
    out = IterativePruner(lenet300_trained, tiny, cfg, seed=0, state_path=state).run()
    assert len(out.history) == 3 and out.kept_step == 1
    assert not out.history[2]["within_budget"] and out.history[2]["val_loss_pp"] > 1.0
    assert "budget" in out.stop_reason
    assert out.kept["sparsity"] == pytest.approx(0.3, abs=1e-3)
    zeros = sum(int((p == 0).sum()) for n, p in out.model.named_parameters() if n.endswith("weight"))
    assert zeros == pytest.approx(0.3 * sum(p.numel() for n, p in out.model.named_parameters()
                                            if n.endswith("weight")), abs=2)


def test_stop_confidence_needs_evidence_of_a_loss_beyond_budget(lenet300_trained: nn.Module,
                                                                 tiny: DataSplits) -> None:
    point = IterativePruner(lenet300_trained, tiny, ScheduleConfig(targets=(0.9,), budget_pp=100.0,
                                                                   finetune_epochs=0), seed=0).run()
    step = point.history[1]
    loss, se = step["val_loss_pp"], step["val_loss_se_pp"]
    assert loss > 0 and se > 0 and step["val_loss_lower_pp"] == pytest.approx(loss)  # z = 0 at 0.5
    # a budget between the observed loss and its one-SE lower bound: the point rule stops, 95 % does not
    budget = loss - se
    strict = IterativePruner(lenet300_trained, tiny, ScheduleConfig(targets=(0.9,), budget_pp=budget,
                                                                    finetune_epochs=0), seed=0).run()
    assert strict.kept_step == 0 and "budget" in strict.stop_reason
    lenient = IterativePruner(lenet300_trained, tiny, ScheduleConfig(targets=(0.9,), budget_pp=budget,
                                                                     finetune_epochs=0, stop_confidence=0.95),
                              seed=0).run()
    rec = lenient.history[1]
    assert lenient.kept_step == 1 and rec["within_budget"]
    assert rec["val_loss_lower_pp"] == pytest.approx(loss - 1.6448536 * se, abs=1e-4)
    # far beyond the budget even the lenient rule stops, and says with what confidence
    far = IterativePruner(lenet300_trained, tiny, ScheduleConfig(targets=(0.9,), budget_pp=0.0,
                                                                 finetune_epochs=0, stop_confidence=0.95),
                          seed=0).run()
    assert loss - 1.6448536 * se > 0  # 90 % of LeNet-300-100's weights removed without fine-tuning
    assert far.kept_step == 0 and "0.95 confidence" in far.stop_reason


def test_resume_gives_the_same_result(lenet300_trained: nn.Module, tiny: DataSplits, tmp_path: Path) -> None:
    cfg = ScheduleConfig(scheme="class-distribution", targets=(0.5, 0.85), budget_pp=50.0, finetune_epochs=1)
    full = IterativePruner(lenet300_trained, tiny, cfg, seed=3).run()
    state = tmp_path / "state.pt"
    first = IterativePruner(lenet300_trained, tiny, cfg, seed=3, state_path=state).run(max_steps=1)
    assert len(first.history) == 2 and state.is_file()
    resumed = IterativePruner(lenet300_trained, tiny, cfg, seed=3, state_path=state).run()
    assert resumed.resumed_from == 1 and len(resumed.history) == 3
    assert resumed.history[1]["lambda"] is not None
    for k, v in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v)
    # a different seed does not reuse the state file
    other = IterativePruner(lenet300_trained, tiny, cfg, seed=4, state_path=state)
    assert other.fingerprint != IterativePruner(lenet300_trained, tiny, cfg, seed=3).fingerprint


def test_structured_schedule_shrinks_lenet5(lenet5_trained: nn.Module, tiny: DataSplits, tmp_path: Path) -> None:
    cfg = ScheduleConfig(structured=True, targets=(0.25, 0.5), budget_pp=50.0, finetune_epochs=1)
    out = IterativePruner(lenet5_trained, tiny, cfg, seed=0, state_path=tmp_path / "s.pt").run()
    assert out.channels == {"conv1": 10, "conv2": 25, "fc1": 250}
    assert out.model.conv2.weight.shape == (25, 10, 5, 5) and out.model.fc1.weight.shape == (250, 400)
    assert out.kept["params"] < 0.3 * out.history[0]["params"]
    assert out.kept["macs"] < 0.35 * out.history[0]["macs"]
    assert out.kept["test_accuracy"] > 0.85
    # the saved state rebuilds the same structure
    again = rebuild_structure(lenet5_trained, out.channels, tiny.train.images[:2])
    again.load_state_dict(out.model.state_dict())
    resumed = IterativePruner(lenet5_trained, tiny, cfg, seed=0, state_path=tmp_path / "s.pt").run()
    assert resumed.resumed_from == 2 and resumed.channels == out.channels


def test_finetune_limit_fine_tunes_on_a_training_subset(lenet5_trained: nn.Module, tiny: DataSplits,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import crosslayer.prune.schedule as schedule

    seen: list[int] = []
    real_fit = schedule.fit

    def spy(model: nn.Module, train: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(len(train))
        return real_fit(model, train, *args, **kwargs)

    monkeypatch.setattr(schedule, "fit", spy)
    cfg = ScheduleConfig(structured=True, targets=(0.25,), budget_pp=50.0, finetune_epochs=1, finetune_limit=64,
                         round_to=4)
    out = IterativePruner(lenet5_trained, tiny, cfg, seed=0).run()
    assert seen == [64] and len(tiny.train) > 64
    assert all(n % 4 == 0 for n in out.channels.values())


@pytest.mark.parametrize(("options", "message"), [
    ({"targets": [0.5, 0.4]}, "strictly increasing"),
    ({"targets": [0.5, 1.0]}, r"targets\[1\] = 1.0 is out of range"),
    ({"targets": []}, "targets is empty"),
    ({"budget_pp": -0.5}, "budget_pp = -0.5 is out of range"),
    ({"stop_confidence": 0.4}, "stop_confidence = 0.4 is out of range"),
    ({"stop_confidence": 1.0}, "stop_confidence = 1.0 is out of range"),
    ({"scheme": "random"}, "class-blind"),
    ({"finetune_lr": 0.0}, "finetune_lr"),
    ({"finetune_limit": -1}, "finetune_limit"),
    ({"round_to": 0}, "round_to"),
])
def test_config_errors(options: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match=message):
        from_mapping(ScheduleConfig, options, section="prune")


def test_bad_layer_name(lenet5_trained: nn.Module, tiny: DataSplits) -> None:
    with pytest.raises(ConfigError, match="'conv7'"):
        IterativePruner(lenet5_trained, tiny, ScheduleConfig(layers=("conv7",)))
    with pytest.raises(ConfigError, match="'conv7'"):
        IterativePruner(lenet5_trained, tiny, ScheduleConfig(layers=("conv7",), structured=True))
