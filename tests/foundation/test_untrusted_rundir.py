"""Run directories, checkpoints and reports are data: opening a stranger's never runs code, never leaves the
directory, never mixes two runs, and every malformed file is one clear error."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from crosslayer.checkpoint import CheckpointError, architecture_record, rebuild, save_checkpoint
from crosslayer.cli.main import app
from crosslayer.errors import CrossLayerError, ModelError
from crosslayer.flow import load_flow_config, run_flow
from crosslayer.models import build_model
from crosslayer.prune.structured import prune_structured
from crosslayer.quant import FixedPointSpec
from crosslayer.quant.layers import quantize_model
from crosslayer.report import Report, Table, load_reports, render_html
from crosslayer.rundir import RunDir, RunDirError, load_run_model

runner = CliRunner()

FLOW = """
[flow]
model = "lenet300"
train_limit = 600
test_limit = 200
stages = ["baseline", "evaluate"]
[baseline]
epochs = 1
optimizer = "adam"
lr = 0.002
"""


class Payload:
    """Unpickling this writes a marker file: the proof that a loader ran code from a file."""

    marker = ""

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code ran"))


def _evil_pickle(path: Path, marker: Path) -> None:
    p = Payload()
    p.marker = str(marker)
    path.write_bytes(pickle.dumps(p))


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    d = tmp_path_factory.mktemp("runs")
    (d / "flow.toml").write_text(FLOW)
    run_flow(load_flow_config(d / "flow.toml"), d / "run")
    return d / "run"


def _copy(run: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(run, dest)
    return dest


def test_run_directory_holds_no_pickle(small_run: Path) -> None:
    for f in (small_run / "checkpoints").glob("*.pt"):
        state = torch.load(f, weights_only=True)  # would raise on any pickled object
        assert all(isinstance(v, torch.Tensor) for v in state.values())
    m = load_run_model(small_run)
    assert isinstance(m, nn.Module) and m(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


def test_a_pickled_checkpoint_never_runs(small_run: Path, tmp_path: Path) -> None:
    run = _copy(small_run, tmp_path / "evil")
    marker = tmp_path / "marker"
    _evil_pickle(run / "checkpoints" / "baseline.pt", marker)
    with pytest.raises(CrossLayerError, match="never loads"):
        load_run_model(run)
    res = runner.invoke(app, ["quantize", str(run), "--out", str(tmp_path / "q")])
    assert res.exit_code == 2 and "never loads" in " ".join(res.output.split())
    assert not marker.exists()


def test_an_older_pickled_run_directory_is_refused_with_the_reason(tmp_path: Path) -> None:
    old = tmp_path / "old"
    (old / "checkpoints").mkdir(parents=True)
    marker = tmp_path / "marker"
    _evil_pickle(old / "checkpoints" / "baseline.pt", marker)
    (old / "config.toml").write_text('[flow]\nmodel = "lenet5"\n')
    for cmd in (["quantize", str(old)], ["faults", str(old)], ["hw", "cost", "--run", str(old)]):
        res = runner.invoke(app, [*cmd, "--out", str(tmp_path / "o")])
        assert res.exit_code == 2, (cmd, res.output)
        assert "pickled" in " ".join(res.output.split()), (cmd, res.output)
    assert not marker.exists()


@pytest.mark.parametrize("stage", ["../../etc/passwd", "/etc/passwd", "..", "a/b"])
def test_names_from_the_command_line_cannot_leave_the_run(small_run: Path, stage: str) -> None:
    with pytest.raises(RunDirError, match="plain name"):
        load_run_model(small_run, stage)


def test_names_inside_run_json_cannot_leave_the_run(small_run: Path, tmp_path: Path) -> None:
    run = _copy(small_run, tmp_path / "r")
    st = json.loads((run / "run.json").read_text())
    st["done"][0]["model"] = "../../../../tmp/x"
    (run / "run.json").write_text(json.dumps(st))
    with pytest.raises(RunDirError, match="plain name"):
        load_run_model(run)


def test_hostile_architecture_records_are_refused(small_run: Path, tmp_path: Path) -> None:
    run = _copy(small_run, tmp_path / "r")
    rec_path = run / "checkpoints" / "baseline.json"
    good = json.loads(rec_path.read_text())
    cases = [
        ({"fc1": {"kind": "os.system", "settings": {}}}, {}, "unknown kind"),
        ({}, {"fc1": {"forward": 1}}, "only in_features"),
        ({}, {"fc1": {"in_features": 10**12}}, "expected a size"),
        ({}, {"nosuch": {"in_features": 3}}, "does not have"),
    ]
    for layers, shapes, msg in cases:
        rec_path.write_text(json.dumps({**good, "layers": layers, "shapes": shapes}))
        with pytest.raises(RunDirError, match=msg):
            load_run_model(run)


def test_checkpoint_round_trip_keeps_changed_shapes_and_quantized_layers() -> None:
    torch.manual_seed(0)
    net = build_model("lenet5").eval()
    prune_structured(net, torch.zeros(1, 1, 28, 28), 0.5)
    quantize_model(net, FixedPointSpec(bits=6, per_channel=True), FixedPointSpec(bits=8, signed=False,
                                                                                  symmetric=False))
    with torch.no_grad():
        for m in net.modules():
            if hasattr(m, "act_lo"):
                m.act_lo.fill_(0.0)
                m.act_hi.fill_(4.0)
    record = json.loads(json.dumps(architecture_record(net, build_model("lenet5"))))
    back = rebuild(build_model("lenet5"), record, net.state_dict()).eval()
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(back(x), net(x))
    assert type(back.conv1).__name__ == "QuantConv2d" and back.conv1.weight_spec.bits == 6


def test_a_layer_type_without_codec_is_not_saved_silently(tmp_path: Path) -> None:
    class Odd(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    net = build_model("lenet300")
    net.extra = Odd()
    with pytest.raises(CheckpointError, match="no checkpoint codec"):
        save_checkpoint(tmp_path / "m", net, build_model("lenet300"))


def test_user_factory_runs_only_when_the_caller_names_it(tmp_path: Path, data_dir: Path) -> None:
    marker = tmp_path / "ran"
    factory = tmp_path / "mynet.py"
    factory.write_text(f"""
from pathlib import Path
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        Path({str(marker)!r}).write_text("factory ran")
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.GELU(), nn.LayerNorm(32), nn.Linear(32, 10))

    def forward(self, x):
        return self.body(x)

def make():
    return Net()
""")
    spec = f"{factory}:make"
    res = runner.invoke(app, ["train", "--model", spec, "--epochs", "1", "--train-limit", "300", "--out",
                              str(tmp_path / "run"), "--json"])
    assert res.exit_code == 0, res.output
    marker.unlink()
    with pytest.raises(ModelError, match="is code"):
        load_run_model(tmp_path / "run")
    res = runner.invoke(app, ["quantize", str(tmp_path / "run"), "--out", str(tmp_path / "q")])
    assert res.exit_code == 2 and "--model" in res.output and not marker.exists()
    net = load_run_model(tmp_path / "run", trusted_model=spec)
    assert marker.exists() and net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_html_report_escapes_every_value(tmp_path: Path) -> None:
    evil = "<script>alert(1)</script>"
    rep = Report(evil, metrics={evil: evil, "x": 1.0}, notes=[evil], config={evil: evil}, seed=None,
                 headline={"test_accuracy": 0.5})
    rep.tables.append(Table(evil, [evil], [[evil], ["<img src=x onerror=alert(1)>"]]))
    d = rep.to_json()
    d["seed"] = None
    html = render_html([Report.from_json(d)], title=evil, summary={evil: evil})
    assert "<script" not in html and "<img src=x" not in html
    assert "&lt;script&gt;" in html


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d.update(seed="<script>"), "seed must be an integer"),
    (lambda d: d.update(tables=[{"title": "t", "columns": ["a"], "rows": "nope"}]), "tables"),
    (lambda d: d.update(figures=[{"title": "f", "png_base64": "!!notbase64!!"}]), "base64"),
    (lambda d: d.update(notes=[1, 2]), "notes"),
    (lambda d: d.pop("stage"), "stage must be a string"),
])
def test_malformed_reports_are_one_clear_error(small_run: Path, tmp_path: Path, mutate, message: str) -> None:
    run = _copy(small_run, tmp_path / "r")
    path = run / "reports" / "baseline.json"
    d = json.loads(path.read_text())
    mutate(d)
    path.write_text(json.dumps(d))
    with pytest.raises(CrossLayerError, match=message):
        load_reports(run)
    res = runner.invoke(app, ["report", str(run)])
    assert res.exit_code == 2


@pytest.mark.parametrize("index", ['{"stages": ["../../x"]}', '{"stages": 5}', "[", '{"nope": 1}', "\udcff"])
def test_malformed_report_index_is_one_clear_error(small_run: Path, tmp_path: Path, index: str) -> None:
    run = _copy(small_run, tmp_path / "r")
    (run / "reports" / "index.json").write_bytes(index.encode("utf-8", "surrogateescape"))
    res = runner.invoke(app, ["report", str(run)])
    assert res.exit_code == 2 and "malformed" in res.output


def test_runs_never_mix(tmp_path: Path, data_dir: Path) -> None:
    flow = tmp_path / "flow.toml"
    flow.write_text(FLOW)
    out = tmp_path / "run"
    run_flow(load_flow_config(flow), out)
    # the same run again: resumed, nothing re-run
    res = runner.invoke(app, ["flow", str(flow), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["flow"]["resumed"] == ["baseline", "evaluate"]
    # another config into the same directory: refused, nothing touched
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    flow.write_text(FLOW.replace("epochs = 1", "epochs = 2"))
    res = runner.invoke(app, ["flow", str(flow), "--out", str(out)])
    assert res.exit_code == 2 and "different config" in res.output
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    # --force removes the older run's files first: no stale checkpoint or report survives
    (out / "checkpoints" / "stale.json").write_text("{}")
    (out / "reports" / "prune.json").write_text("{}")
    res = runner.invoke(app, ["flow", str(flow), "--out", str(out), "--force"])
    assert res.exit_code == 0, res.output
    assert not (out / "checkpoints" / "stale.json").exists() and not (out / "reports" / "prune.json").exists()
    # a non-empty directory that holds no run is not written into
    other = tmp_path / "home"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    res = runner.invoke(app, ["flow", str(flow), "--out", str(other)])
    assert res.exit_code == 2 and "holds no crosslayer run" in res.output


def test_stage_order_that_makes_no_sense_is_refused(tmp_path: Path) -> None:
    flow = tmp_path / "f.toml"
    flow.write_text('[flow]\nstages = ["export", "baseline"]\n')
    res = runner.invoke(app, ["flow", str(flow), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "before 'baseline'" in res.output
    flow.write_text('[flow]\nstages = ["quantize"]\n')
    res = runner.invoke(app, ["flow", str(flow), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "no stage trains or loads" in res.output
    assert not (tmp_path / "r").exists()


def test_write_failures_are_one_clear_error(small_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "q"
    (tmp_path / "q").write_text("a file")
    res = runner.invoke(app, ["quantize", str(small_run), "--out", str(out)])
    assert res.exit_code == 2 and "is a file" in res.output

    def full_disk(fd: int) -> None:
        raise OSError(28, os.strerror(28))

    monkeypatch.setattr(os, "fsync", full_disk)
    res = runner.invoke(app, ["quantize", str(small_run), "--out", str(tmp_path / "q2"), "--test-limit", "100"])
    assert res.exit_code == 2 and "No space left on device" in res.output


def test_resume_state_of_another_format_is_refused(small_run: Path, tmp_path: Path) -> None:
    run = _copy(small_run, tmp_path / "r")
    st = json.loads((run / "run.json").read_text())
    st["format"] = 99
    (run / "run.json").write_text(json.dumps(st))
    with pytest.raises(RunDirError, match="format"):
        RunDir(run).done()
