import pytest
import torch
from torch import nn
from torch.nn import functional as F

from crosslayer.security import (
    CWConfig,
    FGSMConfig,
    HopSkipJumpConfig,
    JSMAConfig,
    PGDConfig,
    REDAttackConfig,
    TrISecConfig,
    fgsm,
    pgd,
    run_attack,
)
from crosslayer.security.base import input_grad_only


def test_fgsm_budget_and_determinism(lenet5_trained: nn.Module, sec_batch) -> None:
    x, y = sec_batch
    r = run_attack(lenet5_trained, x, y, FGSMConfig(eps=0.2))
    assert r.adv.shape == x.shape and float(r.adv.min()) >= 0 and float(r.adv.max()) <= 1
    assert float((r.adv - x).abs().max()) == pytest.approx(0.2, abs=1e-6)
    assert 0.3 < r.metrics["success_rate"] <= 1.0
    assert r.metrics["robust_accuracy"] < r.metrics["clean_accuracy"]
    assert 0 < r.metrics["mean_ssim"] < 1
    r2 = run_attack(lenet5_trained, x, y, FGSMConfig(eps=0.2))
    assert torch.equal(r.adv, r2.adv)
    assert run_attack(lenet5_trained, x, y, FGSMConfig(eps=0.0)).metrics["success_rate"] == 0.0


def test_pgd_linf_stronger_than_fgsm_and_seeded(lenet5_trained: nn.Module, sec_batch) -> None:
    x, y = sec_batch
    cfg = PGDConfig(eps=0.15, steps=10)
    a = run_attack(lenet5_trained, x, y, cfg, seed=1)
    b = run_attack(lenet5_trained, x, y, cfg, seed=1)
    c = run_attack(lenet5_trained, x, y, cfg, seed=2)
    f = run_attack(lenet5_trained, x, y, FGSMConfig(eps=0.15))
    assert torch.equal(a.adv, b.adv) and not torch.equal(a.adv, c.adv)
    assert float((a.adv - x).abs().max()) <= 0.15 + 1e-6
    assert a.metrics["success_rate"] >= f.metrics["success_rate"]
    assert a.metrics["success_rate"] > 0.5


def test_pgd_l2_ball_and_restarts(lenet5_trained: nn.Module, sec_batch) -> None:
    x, y = sec_batch[0][:32], sec_batch[1][:32]
    one = run_attack(lenet5_trained, x, y, PGDConfig(eps=1.5, norm="l2", steps=10), seed=0)
    three = run_attack(lenet5_trained, x, y, PGDConfig(eps=1.5, norm="l2", steps=10, restarts=3), seed=0)
    assert float((three.adv - x).flatten(1).norm(dim=1).max()) <= 1.5 + 1e-4
    assert three.metrics["success_rate"] >= one.metrics["success_rate"]
    assert 0 < one.metrics["success_rate"] < 1


def test_jsma_targeted_l0(lenet5_trained: nn.Module, sec_batch) -> None:
    x, y = sec_batch[0][:3], sec_batch[1][:3]
    r = run_attack(lenet5_trained, x, y, JSMAConfig(gamma=0.08))
    changed = ((r.adv - x).abs() > 1e-6).flatten(1).sum(1)
    assert int(changed.max()) <= 2 * int(0.08 * 784 / 2)
    assert r.metrics["success_rate"] > 0  # reaches the target (y + 1) on some images
    assert bool((r.adv_pred[r.success] == (y[r.success] + 1) % 10).all())


def test_cw_finds_smaller_l2_than_fgsm(lenet5_trained: nn.Module, sec_batch) -> None:
    x, y = sec_batch[0][:4], sec_batch[1][:4]
    cw = run_attack(lenet5_trained, x, y, CWConfig(steps=50, search_steps=1, c=20.0, lr=0.1))
    assert cw.metrics["success_rate"] >= 0.75
    f = run_attack(lenet5_trained, x, y, FGSMConfig(eps=0.3))
    assert cw.metrics["mean_l2"] < f.metrics["mean_l2"]


def test_decision_attacks_respect_query_budget(lenet5_trained: nn.Module, sec_batch) -> None:
    x, y = sec_batch[0][:2], sec_batch[1][:2]
    hsj = run_attack(lenet5_trained, x, y, HopSkipJumpConfig(max_queries=120, init_samples=20), seed=0)
    red = run_attack(lenet5_trained, x, y, REDAttackConfig(max_queries=60), seed=0)
    for r, budget in ((hsj, 120), (red, 60)):
        assert r.queries is not None and int(r.queries.max()) <= budget
        assert r.metrics["success_rate"] == 1.0  # decision-based attacks stay adversarial
        assert r.metrics["mean_queries"] > 0
        assert 0 < r.metrics["mean_l2"] < 28


def test_trisec_keeps_ssim_and_correlation(lenet5_trained: nn.Module, sec_batch) -> None:
    x, y = sec_batch[0][:16], sec_batch[1][:16]
    cfg = TrISecConfig(steps=100, lr=0.03, min_ssim=0.7, min_corr=0.8)
    r = run_attack(lenet5_trained, x, y, cfg, seed=0)
    assert r.metrics["success_rate"] > 0
    assert r.metrics["mean_ssim"] >= 0.7 - 1e-3  # skimage SSIM agrees with the constraint
    assert bool((r.adv_pred[r.success] == (y[r.success] + 1) % 10).all())


def _reference_pgd_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int,
                        start: torch.Tensor) -> torch.Tensor:
    """Madry et al.'s L-inf PGD step by step: ascend, project onto the eps-ball, clip to [0, 1]."""
    adv = start.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(adv), y), adv)
        adv = adv.detach() + alpha * g.sign()
        adv = torch.clamp(x + torch.clamp(adv - x, -eps, eps), 0.0, 1.0)
    return adv


def test_pgd_and_fgsm_match_the_textbook_update(lenet5_trained: nn.Module, sec_batch) -> None:
    x, y = sec_batch[0][:32], sec_batch[1][:32]
    model = lenet5_trained.eval()
    flags = [p.requires_grad for p in model.parameters()]
    cfg = PGDConfig(eps=0.2, steps=6, alpha=0.03)
    adv = pgd(model, x, y, cfg, gen=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    start = (x + 0.2 * (torch.rand(x.shape, generator=gen) * 2 - 1)).clamp(0.0, 1.0)
    ref = _reference_pgd_linf(model, x, y, 0.2, 0.03, 6, start)
    assert float((adv - ref).abs().max()) <= 1e-6
    assert float((adv - x).abs().max()) <= 0.2 + 1e-6 and float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xr), y), xr)
    assert torch.equal(fgsm(model, x, y, 0.1), (x + 0.1 * g.sign()).clamp(0.0, 1.0))
    # the attacks leave the model's parameter flags and the caller's images untouched
    assert [p.requires_grad for p in model.parameters()] == flags
    assert not x.requires_grad and torch.equal(x, sec_batch[0][:32])


def test_input_grad_only_restores_parameter_flags() -> None:
    net = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    net[1].bias.requires_grad_(False)
    with input_grad_only(net):
        assert not any(p.requires_grad for p in net.parameters())
        x = torch.ones(1, 4, requires_grad=True)
        (g,) = torch.autograd.grad(net(x).sum(), x)
        assert g.shape == (1, 4)
    assert [p.requires_grad for p in net.parameters()] == [True, True, True, False]
    with pytest.raises(RuntimeError, match="boom"), input_grad_only(net):
        raise RuntimeError("boom")
    assert [p.requires_grad for p in net.parameters()] == [True, True, True, False]
