"""The options of the co-design search (the ``[search]`` flow section, ``crosslayer search`` and
:func:`crosslayer.explore.search.search` share them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from crosslayer.approx import DEFAULT_NAMES
from crosslayer.config import MAX_EPOCHS, Config, check_range
from crosslayer.errors import ConfigError
from crosslayer.memory.curves import BerCurve, check_voltage, resolve_curve
from crosslayer.prune import SCHEMES

__all__ = ["OBJECTIVES", "SearchConfig"]

OBJECTIVES: dict[str, str] = {"accuracy": "maximize", "energy": "minimize", "latency": "minimize", "size": "minimize"}
"""The objectives a search may optimise, with their Optuna directions."""


@dataclass(frozen=True, kw_only=True)
class SearchConfig(Config):
    """What the search optimises, over which choices, how each trial is scored and how the Pareto set is finished.

    Study: ``objectives`` (any of accuracy, energy, latency, size), ``sampler`` (tpe, nsga2, random, grid),
    ``trials`` (the study's total, all states), ``storage`` (a database URL; empty: a SQLite file beside the run,
    or a temporary one from Python), ``study`` (its name), ``workers`` (local processes, one torch thread each),
    ``threads`` (torch threads of a single worker; 0 = unchanged), ``heartbeat_s`` (a killed trial is failed
    after three missed beats).

    Space, per layer: ``max_sparsity`` (the kept fraction is searched on a log scale down to
    ``1 - max_sparsity``), ``weight_bits``, ``act_bits``, ``multipliers``; per prunable channel group (the
    output channels of a layer, or of every layer a residual add joins): with ``max_channel_cut`` > 0 the
    fraction of channels kept, searched in ``[1 - max_channel_cut, 1]`` and removed by structured pruning
    before the weights are pruned (AMC, He et al., ECCV 2018, searches these ratios per layer; 0 = off, the
    default);
    per network: ``dataflows`` (empty: the cost model's least-energy dataflow per layer, plus the least-latency one
    and each fixed dataflow when latency is an objective), ``imc`` (in-memory execution as a choice). The grid
    sampler sweeps ``grid_schemes`` x ``grid_sparsities`` x ``grid_bits`` (``grid_act_bits`` activations, exact
    multipliers) like the ``explore`` stage.

    Warm start: ``warm_start`` lists uniform designs ``[sparsity, weight_bits, act_bits]`` or ``[sparsity,
    weight_bits, act_bits, channel_cut]`` (every layer alike, exact multipliers) enqueued as the first trials of a
    new study, before the sampler proposes anything: on a deep network a random per-layer design almost always
    destroys the model, so a few known-good anchors show the sampler where the accurate region is (empty: none, the
    default).

    Hardware: ``accelerator`` (preset or TOML file), ``skip`` (which zeros it skips), ``hw_samples`` (validation
    images that give activation densities).

    Trials (validation split only): ``trial_epochs`` of quantization-aware fine-tuning on ``trial_train_limit``
    training images, accuracy on the first ``trial_val_limit`` validation images (0 = all), learning rate ``lr``.
    Finals: up to ``final_points`` Pareto points within ``budget_pp + final_slack_pp`` of the baseline (trial
    accuracy) are fine-tuned ``final_epochs`` on ``final_train_limit`` images (0 = all), scored on the whole
    validation split and measured once on the test split; the reported point is the cheapest whose validation
    loss is within ``budget_pp``. Constraints for the sampler: ``max_loss_pp``, ``max_energy``, ``max_latency_ms``
    (0 = none).

    Weight-memory voltage (issue 19; empty ``memory_voltages`` = off, the default): the network-level
    ``memory_voltage`` is chosen among ``memory_voltages``; a trial reads its weights through one chip's
    persistent faults at that voltage (``memory_curve``: a built-in BER curve or a CSV table, default the
    ``kc705b-28nm-probit`` fit as the ``memory`` stage; the chip drawn from ``memory_chip_seed``), fine-tuned
    with those faults in the forward pass when ``memory_adapt`` (MATIC, Kim et al., DATE 2018; Adam at
    ``memory_adapt_lr``), and costs the ``memory_buffer`` level's per-access energy scaled to the voltage
    (:func:`crosslayer.hw.voltage.at_memory_voltage`, ``memory_leakage_share`` of it leakage at nominal).
    """

    objectives: tuple[str, ...] = ("accuracy", "energy")
    sampler: Literal["tpe", "nsga2", "random", "grid"] = "tpe"
    trials: int = 40
    startup_trials: int = 10
    population: int = 20
    storage: str = ""
    study: str = "search"
    workers: int = 1
    threads: int = 0
    heartbeat_s: int = 10
    max_sparsity: float = 0.98
    weight_bits: tuple[int, ...] = (2, 3, 4, 5, 6, 8)
    act_bits: tuple[int, ...] = (4, 5, 6, 8)
    multipliers: tuple[str, ...] = DEFAULT_NAMES
    dataflows: tuple[str, ...] = ()
    imc: bool = False
    grid_schemes: tuple[str, ...] = SCHEMES
    grid_sparsities: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95)
    grid_bits: tuple[int, ...] = (8, 6, 4)
    grid_act_bits: int = 8
    accelerator: str = "eyeriss"
    skip: Literal["none", "weights", "activations", "both"] = "both"
    hw_samples: int = 64
    trial_epochs: int = 1
    trial_train_limit: int = 2000
    trial_val_limit: int = 500
    lr: float = 1e-3
    batch_size: int = 64
    final_points: int = 4
    final_epochs: int = 3
    final_train_limit: int = 0
    final_slack_pp: float = 1.0
    budget_pp: float = 0.5
    max_loss_pp: float = 0.0
    max_energy: float = 0.0
    max_latency_ms: float = 0.0
    memory_voltages: tuple[float, ...] = ()
    memory_curve: str = "kc705b-28nm-probit"
    memory_chip_seed: int = 0
    memory_adapt: bool = True
    memory_adapt_lr: float = 1e-3
    memory_leakage_share: float = 0.0
    memory_buffer: Literal["glb", "rf"] = "glb"
    max_channel_cut: float = 0.0
    warm_start: tuple[tuple[float, int, int] | tuple[float, int, int, float], ...] = ()

    def validate(self) -> None:
        if not self.objectives:
            raise ConfigError("objectives is empty; choose from " + ", ".join(OBJECTIVES))
        for o in self.objectives:
            if o not in OBJECTIVES:
                raise ConfigError(f"objective {o!r} is unknown; allowed: {', '.join(OBJECTIVES)}")
        if len(set(self.objectives)) != len(self.objectives):
            raise ConfigError(f"objectives {list(self.objectives)} name one twice")
        if self.sampler not in ("tpe", "nsga2", "random", "grid"):
            raise ConfigError(f"sampler = {self.sampler!r} is unknown; allowed: tpe, nsga2, random, grid")
        check_range("trials", self.trials, 1, 1_000_000)
        check_range("startup_trials", self.startup_trials, 1, 1_000_000)
        check_range("population", self.population, 2, 100_000)
        check_range("workers", self.workers, 1, 256)
        check_range("threads", self.threads, 0, 1024)
        if self.workers > 1 and self.threads > 1:
            raise ConfigError(f"threads = {self.threads} with workers = {self.workers}: each worker runs one torch "
                              "thread (forked processes); use threads = 0")
        check_range("heartbeat_s", self.heartbeat_s, 1, 3600)
        if not self.study or any(c in self.study for c in "\n\r\t"):
            raise ConfigError(f"study = {self.study!r} must be a non-empty name on one line")
        check_range("max_sparsity", self.max_sparsity, 0.0, 1.0, hi_open=True)
        for s in self.grid_schemes:
            if s not in SCHEMES:
                raise ConfigError(f"grid_schemes: {s!r} is unknown; allowed: {', '.join(SCHEMES)}")
        for sp in self.grid_sparsities:
            check_range("grid_sparsities[]", sp, 0.0, 1.0, hi_open=True)
        for b in self.grid_bits:
            check_range("grid_bits[]", b, 2, 16)
        check_range("grid_act_bits", self.grid_act_bits, 2, 16)
        if not (self.grid_schemes and self.grid_sparsities and self.grid_bits):
            raise ConfigError("grid_schemes, grid_sparsities and grid_bits must each list at least one value")
        check_range("max_channel_cut", self.max_channel_cut, 0.0, 1.0, hi_open=True)
        for design in self.warm_start:
            if len(design) not in (3, 4):
                raise ConfigError(f"warm_start: {list(design)} must be [sparsity, weight_bits, act_bits] or "
                                  "[sparsity, weight_bits, act_bits, channel_cut]")
            check_range("warm_start sparsity", design[0], 0.0, 1.0, hi_open=True)
            check_range("warm_start weight_bits", design[1], 1, 16)
            check_range("warm_start act_bits", design[2], 1, 16)
            if len(design) == 4:
                check_range("warm_start channel_cut", design[3], 0.0, self.max_channel_cut)
        if self.warm_start and self.sampler == "grid":
            raise ConfigError("warm_start applies to the layerwise samplers (tpe, nsga2, random), not to grid")
        check_range("hw_samples", self.hw_samples, 1, 100_000)
        check_range("trial_epochs", self.trial_epochs, 0, MAX_EPOCHS)
        check_range("trial_train_limit", self.trial_train_limit, 0)
        check_range("trial_val_limit", self.trial_val_limit, 0)
        check_range("lr", self.lr, 0.0, 10.0, lo_open=True)
        check_range("batch_size", self.batch_size, 1, 1 << 16)
        check_range("final_points", self.final_points, 0, 1000)
        check_range("final_epochs", self.final_epochs, 0, MAX_EPOCHS)
        check_range("final_train_limit", self.final_train_limit, 0)
        check_range("final_slack_pp", self.final_slack_pp, 0.0, 100.0)
        check_range("budget_pp", self.budget_pp, 0.0, 100.0)
        for key in ("max_loss_pp", "max_energy", "max_latency_ms"):
            check_range(key, getattr(self, key), 0.0)
        self._validate_memory()

    def _validate_memory(self) -> None:
        check_range("memory_chip_seed", self.memory_chip_seed, 0, 2**31 - 1)
        check_range("memory_adapt_lr", self.memory_adapt_lr, 0.0, 1.0, lo_open=True)
        check_range("memory_leakage_share", self.memory_leakage_share, 0.0, 1.0)
        if self.memory_buffer not in ("glb", "rf"):
            raise ConfigError(f"memory_buffer = {self.memory_buffer!r} is unknown; allowed: glb, rf")
        if not self.memory_voltages:
            return
        for v in self.memory_voltages:
            check_voltage(v, "memory_voltages[]")
        if len(set(self.memory_voltages)) != len(self.memory_voltages):
            raise ConfigError(f"memory_voltages = {list(self.memory_voltages)} lists a voltage twice")
        curve = self.memory_curve_model()
        for v in self.memory_voltages:
            try:
                curve.ber(v)
            except ConfigError as exc:  # outside the curve's range: the message names the range
                raise ConfigError(f"memory_voltages: {exc}") from None
        if self.imc:
            raise ConfigError("memory_voltages with imc = true: in-memory execution keeps the weights in crossbar "
                              "conductances, not in the SRAM weight buffer the voltage scales; use one or the other")
        if any(m != "exact" for m in self.multipliers):
            raise ConfigError("memory_voltages needs multipliers = ['exact']: the weight-memory faults act on the "
                              "stored codes of the quantized layers, which the approximate-multiplier emulation "
                              "does not read through the chip")

    def memory_curve_model(self) -> BerCurve:
        """The BER curve of the weight memory (``memory_curve``: a built-in name or a CSV table)."""
        return resolve_curve(self.memory_curve)

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o] for o in self.objectives]

    @property
    def cost_objective(self) -> str:
        """The objective the reported point minimises within the budget: the first besides accuracy (energy if
        accuracy is the only one)."""
        return next((o for o in self.objectives if o != "accuracy"), "energy")
