import json
import os

import pytest
import torch
from typer.testing import CliRunner

from crosslayer.cli.main import app
from crosslayer.device import resolve_device
from crosslayer.errors import ConfigError
from crosslayer.flow import load_flow_config, load_run_model, run_flow
from crosslayer.models import build_model
from crosslayer.report import Report, load_reports, render_html
from crosslayer.train import TrainConfig, evaluate, fit, fit_cached, seed_everything
from user_models import USER_MODEL_NAMES, build_user_model

runner = CliRunner()
QUICK = TrainConfig(epochs=1, batch_size=64, lr=0.002, optimizer="adam", weight_decay=0.0)


def _tiny(mnist_small, n=1500):
    return mnist_small.train.subset(n), mnist_small.val


def test_training_is_deterministic(mnist_small):
    train, val = _tiny(mnist_small)
    accs = []
    for _ in range(2):
        seed_everything(7)
        m = build_model("lenet300")
        fit(m, train, val, QUICK, seed=7)
        accs.append(evaluate(m, mnist_small.test).accuracy)
    assert accs[0] == accs[1]
    assert accs[0] > 0.7


def _seeded(name, seed):
    seed_everything(seed)
    return build_model(name)


def test_fit_cached_reuses_training(mnist_small, tmp_path):
    train, val = _tiny(mnist_small)
    m1 = _seeded("lenet300", 0)
    r1 = fit_cached("lenet300", m1, train, val, QUICK, seed=1, cache=tmp_path)
    m2 = _seeded("lenet300", 0)
    r2 = fit_cached("lenet300", m2, train, val, QUICK, seed=1, cache=tmp_path)
    assert not r1.cached and r2.cached
    assert torch.equal(m1.fc1.weight, m2.fc1.weight)
    r3 = fit_cached("lenet300", _seeded("lenet300", 0), train, val, QUICK, seed=2, cache=tmp_path)
    assert not r3.cached, "another seed must train again"


def test_fit_cached_keys_the_starting_weights(mnist_small, tmp_path):
    """Two callers that initialise the model differently (another RNG state, pretrained weights) must not share
    a cached training: the second would silently get weights trained from the first one's start."""
    train, val = _tiny(mnist_small)
    other = _seeded("lenet300", 5)
    m1 = _seeded("lenet300", 0)
    assert not torch.equal(m1.fc1.weight, other.fc1.weight)
    fit_cached("lenet300", m1, train, val, QUICK, seed=1, cache=tmp_path)
    r2 = fit_cached("lenet300", other, train, val, QUICK, seed=1, cache=tmp_path)
    assert not r2.cached, "another starting point must train again"
    assert not torch.equal(m1.fc1.weight, other.fc1.weight)
    pretrained = _seeded("lenet300", 0)
    pretrained.load_state_dict(m1.state_dict())     # fine-tuning from trained weights is another training too
    assert not fit_cached("lenet300", pretrained, train, val, QUICK, seed=1, cache=tmp_path).cached
    assert len(list((tmp_path / "trained").glob("*.pt"))) == 3


def test_on_step_hook_runs_every_step(mnist_small):
    train, val = _tiny(mnist_small, 640)
    m = build_model("lenet300")
    steps = []
    fit(m, train, val, QUICK, seed=0, on_step=lambda model: steps.append(1))
    assert len(steps) == 10


def test_flow_writes_run_directory(mnist_small, tmp_path, data_dir):
    cfg = tmp_path / "f.toml"
    cfg.write_text('[flow]\nmodel = "lenet300"\ntrain_limit = 1500\ntest_limit = 500\n'
                   'stages = ["baseline", "evaluate"]\n[baseline]\nepochs = 2\noptimizer = "adam"\nlr = 0.002\n'
                   'weight_decay = 0.0\n')
    out = tmp_path / "run"
    reports = run_flow(load_flow_config(cfg), out)
    assert [r.stage for r in reports] == ["baseline", "evaluate"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.7 < metrics["baseline"]["test_accuracy"] <= 1.0
    assert metrics["evaluate"]["test_accuracy"] == pytest.approx(metrics["baseline"]["test_accuracy"])
    assert (out / "config.toml").is_file() and "[baseline]" in (out / "config.toml").read_text()
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "baseline" in html
    assert [r.stage for r in load_reports(out)] == ["baseline", "evaluate"]
    model = load_run_model(out)
    assert evaluate(model, mnist_small.test.subset(500)).accuracy == pytest.approx(
        metrics["evaluate"]["test_accuracy"], abs=1e-6)
    assert not list(out.rglob("*.tmp")), "no temporary files are left behind"


def test_cli_train_writes_metrics(tmp_path, data_dir):
    out = tmp_path / "run"
    res = runner.invoke(app, ["train", "--model", "lenet300", "--dataset", "mnist", "--out", str(out),
                              "--epochs", "2", "--train-limit", "1500", "--optimizer", "adam", "--lr", "0.002",
                              "--json"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())["baseline"]
    assert 0 < m["test_accuracy"] <= 1 and m["params"] == 266_610 and m["train_seconds"] >= 0
    assert json.loads(res.stdout)["params"] == 266_610
    assert (out / "weights.pt").is_file()
    ev = runner.invoke(app, ["eval", "--model", "lenet300", "--weights", str(out / "weights.pt"), "--json"])
    assert ev.exit_code == 0, ev.output
    assert json.loads(ev.stdout)["test_accuracy"] > 0.7


def test_cli_train_flip_option_reaches_the_run_config(tmp_path, data_dir):
    import tomllib

    out = tmp_path / "run"
    res = runner.invoke(app, ["train", "--model", "lenet300", "--dataset", "mnist", "--out", str(out), "--epochs",
                              "1", "--train-limit", "600", "--augment-flip", "--augment-shift", "1", "--no-cache"])
    assert res.exit_code == 0, res.output
    cfg = tomllib.loads((out / "config.toml").read_text())
    assert cfg["baseline"]["augment_flip"] is True and cfg["baseline"]["augment_shift"] == 1


@pytest.mark.parametrize("args, message", [
    (["train", "--model", "nope", "--out", "{tmp}/r"], "unknown model 'nope'"),
    (["train", "--dataset", "cifar1000", "--out", "{tmp}/r"], "unknown dataset 'cifar1000'"),
    (["train", "--dataset", "cifar100", "--data-dir", "{tmp}", "--out", "{tmp}/r"], "not found in data folder"),
    (["train", "--model", "{tmp}/missing.py:f", "--out", "{tmp}/r"], "does not exist"),
    (["flow", "{tmp}/missing.toml", "--out", "{tmp}/r"], "does not exist"),
    (["train", "--data-dir", "{tmp}/nodata", "--out", "{tmp}/r"], "does not exist"),
    (["report", "{tmp}"], "not a run directory"),
    (["flow", "--device", "tpu", "--out", "{tmp}/r"], "unknown device 'tpu'"),
])
def test_cli_bad_input_is_one_clear_error(tmp_path, args, message):
    res = runner.invoke(app, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert res.exit_code == 2
    assert message in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "r").exists(), "a failed run must leave no run directory behind"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_dir(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    res = runner.invoke(app, ["train", "--out", str(ro / "run"), "--epochs", "1"])
    assert res.exit_code == 2 and "not writable" in res.output


def test_unwritable_output_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = runner.invoke(app, ["train", "--out", str(blocker / "run"), "--epochs", "1"])
    assert res.exit_code == 2 and "not writable" in res.output


def test_help_on_every_command():
    for cmd in ["train", "eval", "flow", "report", "stages"]:
        res = runner.invoke(app, [cmd, "--help"])
        assert res.exit_code == 0 and "Usage" in res.output


def test_report_renders_tables_and_escapes():
    r = Report("x", metrics={"acc": 0.5, "nan": float("nan")})
    r.add_table("<t>", ["a"], [[1]])
    html = render_html([r])
    assert "&lt;t&gt;" in html and "<t>" not in html
    assert r.to_json()["metrics"]["nan"] is None


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("npu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_on_cuda(mnist_small):
    m = build_model("lenet300").to(resolve_device("cuda"))
    fit(m, mnist_small.train.subset(1000), mnist_small.val, QUICK, seed=0)
    assert next(m.parameters()).is_cuda
    assert evaluate(m, mnist_small.test).accuracy > 0.8


@pytest.mark.parametrize("args, message", [
    (["train", "--model", "nope", "--out", "{tmp}/r"], "unknown model 'nope'"),
    (["flow", "--device", "tpu", "--out", "{tmp}/r"], "unknown device 'tpu'"),
    (["train", "--model", "{tmp}/missing.py:f", "--out", "{tmp}/r"], "does not exist"),
    (["train", "--weights", "{tmp}/missing.pt", "--out", "{tmp}/r"], "weights file"),
    (["train", "--out", "{tmp}/file/r"], "is a file, not a folder"),
])
def test_bad_input_is_reported_before_any_data_is_loaded(tmp_path, monkeypatch, args, message):
    """Offline, with no dataset on disk: a typo is named as such, not reported as a failed download, and no
    output folder is left behind."""
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("CROSSLAYER_DATA", str(tmp_path / "no-data"))
    monkeypatch.setenv("CROSSLAYER_CACHE", str(tmp_path / "no-cache"))
    res = runner.invoke(app, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert res.exit_code != 0
    assert message in res.output and "download" not in res.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("name", USER_MODEL_NAMES)
def test_fit_cached_keys_the_starting_state_of_user_models(mnist_small, tmp_path, name):
    """User-style models (residual adds, BatchNorm, depthwise convs, SE, GELU / LayerNorm, attention, functional
    ops): the same starting state reuses the training; other weights, or only other BatchNorm statistics (a
    buffer, not a parameter), train again."""
    train, val = mnist_small.train.subset(256), mnist_small.val.subset(128)
    one_step = TrainConfig(epochs=1, batch_size=256, lr=1e-3, optimizer="adam", weight_decay=0.0)
    first = fit_cached(name, build_user_model(name, seed=0), train, val, one_step, seed=0, cache=tmp_path)
    again = fit_cached(name, build_user_model(name, seed=0), train, val, one_step, seed=0, cache=tmp_path)
    assert not first.cached and again.cached
    assert not fit_cached(name, build_user_model(name, seed=1), train, val, one_step, seed=0, cache=tmp_path).cached
    model = build_user_model(name, seed=0)
    bn = next((m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)), None)
    if bn is not None:
        bn.running_mean.add_(0.5)
        assert not fit_cached(name, model, train, val, one_step, seed=0, cache=tmp_path).cached
