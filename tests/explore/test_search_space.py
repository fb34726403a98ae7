"""The co-design search's space, config and hypervolume: pure and fast (no training)."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import torch
from optuna._hypervolume import compute_hypervolume

from crosslayer.errors import ConfigError
from crosslayer.explore.hypervolume import hypervolume_2d
from crosslayer.explore.search_config import SearchConfig
from crosslayer.explore.search_space import Design, LayerChoice, SearchSpace, search_layers
from crosslayer.explore.search_study import redact
from crosslayer.models import build_model
from crosslayer.prune import prunable_weights

MULTS = ("exact", "drum5", "trunc6")


def _suggested(space: SearchSpace, n: int, seed: int = 0) -> list[tuple[dict, Design]]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        design = space.suggest(trial)
        study.tell(trial, 0.0)
        out.append((dict(trial.params), design))
    return out


def test_layers_come_from_the_model_lenet_and_user_models(user_model) -> None:
    assert search_layers(build_model("lenet5")) == ["conv1", "conv2", "fc1", "fc2"]
    res = search_layers(user_model("resnet_tiny"))
    assert "block2.shortcut.0" in res and res[0] == "stem.0" and res[-1] == "fc" and len(res) == 7
    mob = SearchSpace.for_model(user_model("mobilenet_tiny"), multipliers=MULTS)
    assert set(mob.exact_only) == {"separable.0", "block1.depthwise.0", "block2.depthwise.0"}
    assert all("depthwise" in why for why in mob.exact_only.values())


@pytest.mark.parametrize("name", ["lenet5", "resnet_tiny", "mobilenet_tiny"])
def test_suggest_decode_round_trip(name: str, user_model) -> None:
    model = build_model(name) if name == "lenet5" else user_model(name)
    space = SearchSpace.for_model(model, multipliers=MULTS, dataflows=("min-energy", "RS", "WS"))
    for params, design in _suggested(space, 6):
        assert list(design.layers) == search_layers(model)
        assert space.decode(params) == design
        assert Design.from_json(design.to_json()) == design
        for layer, c in design.layers.items():
            assert 0.0 <= c.sparsity <= 0.98 and c.weight_bits in space.weight_bits and c.act_bits in space.act_bits
            assert c.multiplier in MULTS
            if layer in space.exact_only:
                assert c.multiplier == "exact" and f"{layer}:multiplier" not in params
            if (c.weight_bits, c.act_bits) != (8, 8):
                assert c.multiplier == "exact"
        assert design.dataflow in ("min-energy", "RS", "WS")


@pytest.mark.parametrize("name", ["lenet5", "resnet_tiny", "mobilenet_tiny"])
def test_uniform_warm_start_design_is_a_valid_trial_of_the_space(name: str, user_model) -> None:
    model = build_model(name) if name == "lenet5" else user_model(name)
    space = SearchSpace.for_model(model, multipliers=MULTS, weight_bits=(2, 4, 6, 8), act_bits=(4, 8),
                                  dataflows=("min-energy", "RS"), memory_voltages=(0.6, 0.9))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(space.uniform_params(0.0, 8, 8))
    study.enqueue_trial(space.uniform_params(0.5, 5, 6))   # 5 and 6 bits: the nearest choices, ties upwards
    study.enqueue_trial(space.uniform_params(0.999, 8, 8))  # beyond max_sparsity: clipped to it
    designs = []
    for _ in range(3):
        trial = study.ask()
        designs.append(space.suggest(trial))
        study.tell(trial, 0.0)
    dense, half, most = designs
    dense_choices = {(c.sparsity, c.weight_bits, c.act_bits, c.multiplier) for c in dense.layers.values()}
    assert dense_choices == {(0.0, 8, 8, "exact")}
    assert {(c.sparsity, c.weight_bits, c.act_bits) for c in half.layers.values()} == {(0.5, 6, 8)}
    assert {c.sparsity for c in most.layers.values()} == {0.98}
    assert dense.dataflow == "min-energy" and dense.memory_voltage == 0.9
    with pytest.raises(ConfigError, match="layerwise"):
        SearchSpace.grid(build_model("lenet5"), ["class-blind"], [0.5], [8]).uniform_params(0.0, 8, 8)


def test_grid_space_matches_the_sweep_schemes() -> None:
    model = build_model("lenet5")
    space = SearchSpace.grid(model, ["class-blind", "class-uniform"], [0.5, 0.9], [8, 4])
    grid = space.grid_search_space()
    assert len(grid["point"]) * len(grid["weight_bits"]) == 8
    uni = space.decode({"point": "class-uniform@0.9", "weight_bits": 4})
    assert all(abs(c.sparsity - 0.9) < 1e-3 and c.weight_bits == 4 and c.act_bits == 8 and c.multiplier == "exact"
               for c in uni.layers.values())
    blind = space.decode({"point": "class-blind@0.5", "weight_bits": 8})
    sizes = {n.removesuffix(".weight"): w.numel() for n, w in prunable_weights(model).items()}
    overall = sum(c.sparsity * sizes[n] for n, c in blind.layers.items()) / sum(sizes.values())
    assert overall == pytest.approx(0.5, abs=1e-3)
    assert len({round(c.sparsity, 3) for c in blind.layers.values()}) > 1  # one global threshold: ratios differ


def test_space_and_config_refuse_bad_choices() -> None:
    model = build_model("lenet5")
    with pytest.raises(ConfigError, match="at most 8"):
        SearchSpace.for_model(model, multipliers=MULTS, weight_bits=(4, 12))
    with pytest.raises(ConfigError, match="unknown multiplier"):
        SearchSpace.for_model(model, multipliers=("exact", "nonsense"))
    with pytest.raises(ConfigError, match="objective 'speed' is unknown"):
        SearchConfig(objectives=("accuracy", "speed"))
    with pytest.raises(ConfigError, match="one torch thread"):
        SearchConfig(workers=2, threads=4)
    with pytest.raises(ConfigError, match="not a design record"):
        Design.from_json({"layers": {"conv1": {"sparsity": 0.1}}})
    with pytest.raises(ConfigError, match="another search space"):
        SearchSpace.for_model(model).decode({"conv1:density": 0.5})
    assert SearchConfig().cost_objective == "energy"
    assert SearchConfig(objectives=("accuracy", "latency", "energy")).cost_objective == "latency"


def test_hypervolume_2d_matches_optuna_and_simple_areas() -> None:
    assert hypervolume_2d([[1.0, 1.0]], [3.0, 3.0]) == pytest.approx(4.0)
    assert hypervolume_2d([[1.0, 2.0], [2.0, 1.0]], [3.0, 3.0]) == pytest.approx(3.0)
    assert hypervolume_2d([[4.0, 0.0], [0.0, 5.0]], [3.0, 3.0]) == 0.0  # beyond the reference: nothing
    assert hypervolume_2d([], [1.0, 1.0]) == 0.0
    rng = np.random.default_rng(0)
    for _ in range(5):
        pts = rng.random((30, 2))
        assert hypervolume_2d(pts, [1.1, 1.2]) == pytest.approx(compute_hypervolume(pts, np.array([1.1, 1.2])))
    with pytest.raises(ConfigError, match="finite"):
        hypervolume_2d([[np.nan, 1.0]], [2.0, 2.0])


def test_redact_hides_the_password() -> None:
    assert redact("postgresql://alice:s3cret@db.example:5432/studies") == "postgresql://alice:***@db.example:5432/studies"
    assert redact("sqlite:///tmp/study.db") == "sqlite:///tmp/study.db"
    assert LayerChoice(0.5, 4, 8).multiplier == "exact"


def _channel_space(model: torch.nn.Module, cut: float = 0.5, **kw) -> SearchSpace:
    from crosslayer.explore.search import build_space

    return build_space(model, SearchConfig(max_channel_cut=cut, multipliers=MULTS, **kw), (),
                       example_input=torch.zeros(1, 1, 28, 28))


@pytest.mark.parametrize("name", ["lenet5", "resnet_tiny", "mobilenet_tiny", "functional_cnn"])
def test_channel_cuts_are_searched_per_group_and_round_trip(name: str, user_model) -> None:
    model = build_model(name) if name == "lenet5" else user_model(name)
    space = _channel_space(model)
    assert space.channel_groups and space.max_channel_cut == 0.5
    assert "fc2" not in space.channel_groups and "fc" not in space.channel_groups  # the logits keep their classes
    for params, design in _suggested(space, 6, seed=1):
        assert set(design.channels) == set(space.channel_groups)
        assert all(0.5 <= keep <= 1.0 for keep in design.channels.values())
        assert {k for k in params if k.endswith(":channels")} == {f"{g}:channels" for g in space.channel_groups}
        assert space.decode(params) == design and Design.from_json(design.to_json()) == design
        assert design.channel_cut == {k: round(1 - v, 4) for k, v in design.channels.items() if v < 1}
    if name == "lenet5":
        assert space.channel_groups == ("conv1", "conv2", "fc1")
        anchor = space.decode(space.uniform_params(0.5, 8, 8, 0.25))
        assert anchor.channels == {"conv1": 0.75, "conv2": 0.75, "fc1": 0.75}
        assert "channels kept conv1 0.75" in anchor.summary()
        clipped = space.decode(space.uniform_params(0.5, 8, 8, 0.9))  # beyond max_channel_cut: clipped to it
        assert set(clipped.channels.values()) == {0.5}


def test_channel_cuts_off_ask_and_describe_what_they_did_before() -> None:
    model = build_model("lenet5")
    off = _channel_space(model, cut=0.0)
    assert off.channel_groups == () and "channel_groups" not in off.describe()
    assert off.describe() == SearchSpace.for_model(model, multipliers=MULTS).describe()
    assert not any(k.endswith(":channels") for k in _suggested(off, 1)[0][0])
    assert "channels" not in _suggested(off, 1)[0][1].to_json()
    assert _channel_space(model).digest() != off.digest()
    grid = _channel_space(model, sampler="grid")  # the grid sweep has no channel choice
    assert grid.mode == "grid" and grid.channel_groups == ()


def test_channel_cut_config_errors() -> None:
    from crosslayer.explore.search import build_space

    with pytest.raises(ConfigError, match="max_channel_cut"):
        SearchConfig(max_channel_cut=1.0)
    with pytest.raises(ConfigError, match="warm_start channel_cut"):
        SearchConfig(max_channel_cut=0.3, warm_start=((0.5, 8, 8, 0.5),))
    with pytest.raises(ConfigError, match="must be"):
        SearchConfig(warm_start=((0.5, 8),))
    with pytest.raises(ConfigError, match="example input"):
        build_space(build_model("lenet5"), SearchConfig(max_channel_cut=0.5), ())
    with pytest.raises(ConfigError, match="fractions"):
        Design.from_json({"layers": {}, "channels": {"conv1": 0.0}})
    notes: list[str] = []
    logits_only = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))  # no channel group to cut
    space = build_space(logits_only, SearchConfig(max_channel_cut=0.5), (), notes,
                        example_input=torch.zeros(1, 1, 28, 28))
    assert space.channel_groups == () and space.max_channel_cut == 0.0
    assert any(n.startswith("channel pruning is not offered") for n in notes)


def test_attention_block_offers_its_mlp_hidden_channels(user_model) -> None:
    assert _channel_space(user_model("attention_mlp")).channel_groups == ("mlp.0",)
