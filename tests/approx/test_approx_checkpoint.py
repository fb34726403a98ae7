"""An approximate model is data too: saved as state dict + architecture record, rebuilt bit-identically on a
fresh user-style model, including a multiplier given as a truth table (its table travels in the state dict);
malformed records are refused with a message."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from crosslayer.approx import ApproxLayer, Multiplier, approximate_model, assignment_of
from crosslayer.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from crosslayer.errors import CrossLayerError
from crosslayer.quant import FixedPointSpec, calibrating, quantize_model
from small_models import user_net


def _approximated(assignment: dict[str, str | Multiplier] | None = None) -> tuple[nn.Module, nn.Module]:
    base = user_net()
    q = quantize_model(copy.deepcopy(base), FixedPointSpec(bits=8, per_channel=True), FixedPointSpec(bits=8))
    with calibrating(q):
        q(torch.randn(64, 3, 8, 8, generator=torch.Generator().manual_seed(1)))
    q.eval()
    names = [n for n, m in q.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    mults = ["mitchell", "drum4", "exact", "etm4"]
    return base, approximate_model(q, assignment or {n: mults[i % 4] for i, n in enumerate(names)}).eval()


def test_an_approximate_model_comes_back_bit_identical(tmp_path: Path) -> None:
    base, model = _approximated()
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    save_checkpoint(tmp_path / "m", model, base)
    record = json.loads((tmp_path / "m.json").read_text())
    assert {r["kind"] for r in record["layers"].values()} >= {"approx.layer", "quant.conv2d", "quant.linear"}
    back = load_checkpoint(tmp_path / "m", user_net(seed=7)).eval()  # other weights: all of them come from the file
    with torch.no_grad():
        assert torch.equal(back(x), model(x))
    assert assignment_of(back) == assignment_of(model)


def test_a_truth_table_multiplier_travels_in_the_state_dict(tmp_path: Path) -> None:
    v = np.arange(-128, 128, dtype=np.int64)
    table = v[:, None] * v[None, :] + np.random.default_rng(0).integers(-200, 201, (256, 256))
    custom = Multiplier(name="my-table", table=table, signed=True, relative_power=0.5)
    base, model = _approximated({"stem": custom})
    save_checkpoint(tmp_path / "m", model, base)
    back = load_checkpoint(tmp_path / "m", user_net()).eval()
    layer = back.get_submodule("stem")
    assert isinstance(layer, ApproxLayer) and not layer.is_exact
    assert (layer.multiplier_name, layer.relative_power) == ("my-table", 0.5)
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(back(x), model(x))


@pytest.mark.parametrize("settings, message", [
    ({"multiplier": "m", "relative_power": 0.5, "method": "eval"}, "method"),
    ({"multiplier": "m", "relative_power": float("inf"), "method": "auto"}, "relative_power"),
    ({"multiplier": "m", "relative_power": True, "method": "auto"}, "relative_power"),
    ({"multiplier": "x" * 500, "relative_power": 0.5, "method": "auto"}, "multiplier name"),
    ({"multiplier": ["__import__"], "relative_power": 0.5, "method": "auto"}, "multiplier name"),
])
def test_malformed_approximate_records_are_refused(tmp_path: Path, settings: dict, message: str) -> None:
    base, model = _approximated()
    save_checkpoint(tmp_path / "m", model, base)
    record = json.loads((tmp_path / "m.json").read_text())
    record["layers"]["stem"]["settings"] = settings
    (tmp_path / "m.json").write_text(json.dumps(record))
    with pytest.raises(CrossLayerError, match=message):
        load_checkpoint(tmp_path / "m", user_net())


def test_an_approximate_layer_without_its_quantized_layer_record_is_refused(tmp_path: Path) -> None:
    base, model = _approximated()
    save_checkpoint(tmp_path / "m", model, base)
    record = json.loads((tmp_path / "m.json").read_text())
    del record["layers"]["stem.layer"]
    (tmp_path / "m.json").write_text(json.dumps(record))
    with pytest.raises(CrossLayerError, match="integer codes|quantize"):
        load_checkpoint(tmp_path / "m", user_net())
    assert issubclass(CheckpointError, CrossLayerError)


def test_a_codec_refusing_its_own_record_makes_a_checkpoint_error(tmp_path: Path, monkeypatch) -> None:
    """The flow catches CheckpointError to go on without keeping a model; any refusal while checking that a
    record rebuilds must arrive as one."""
    import dataclasses

    from crosslayer import checkpoint
    from crosslayer.errors import StageError

    def refuse(settings, original, child):  # type: ignore[no-untyped-def]
        raise StageError("this layer cannot be rebuilt")

    codec = checkpoint._CODECS["approx.layer"]
    monkeypatch.setitem(checkpoint._CODECS, "approx.layer", dataclasses.replace(codec, decode=refuse))
    base, model = _approximated()
    with pytest.raises(CheckpointError, match="would not rebuild: this layer cannot be rebuilt"):
        save_checkpoint(tmp_path / "m", model, base)
    assert not (tmp_path / "m.pt").exists()
