import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity
from torch import nn

from crosslayer.errors import ConfigError, DataError, ModelError
from crosslayer.security import FGSMConfig, Normalized, PGDConfig, attack_config, check_eps, run_attack
from crosslayer.security.base import perturbation_norms
from crosslayer.security.ssim import correlation, ssim


def test_check_eps_bounds() -> None:
    check_eps(0.0)
    check_eps(1.0)
    check_eps(27.9, "l2", 784)
    with pytest.raises(ConfigError, match=r"eps = -0.1 .*allowed \[0, 1\]"):
        check_eps(-0.1)
    with pytest.raises(ConfigError, match="allowed"):
        check_eps(1.5, "linf")
    with pytest.raises(ConfigError, match="allowed"):
        check_eps(29.0, "l2", 784)  # > sqrt(784) = 28
    with pytest.raises(ConfigError, match="norm = 'l7' is unknown; allowed: linf, l2"):
        check_eps(0.1, "l7")
    with pytest.raises(ConfigError, match="finite"):
        check_eps(float("nan"))


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="unknown attack 'deepfool'; allowed: .*fgsm.*pgd"):
        attack_config("deepfool")
    with pytest.raises(ConfigError, match="norm"):
        attack_config("pgd", norm="l1")
    with pytest.raises(ConfigError, match="steps"):
        attack_config("pgd", steps=0)
    with pytest.raises(ConfigError, match="eps"):
        FGSMConfig(eps=-1).validate()
    assert attack_config("pgd", eps=0.1, steps=10).step_size == pytest.approx(0.025)


class _Seg(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x  # 4-D output: not a classifier


def test_bad_inputs_are_clear_errors(lenet5_trained: nn.Module, sec_batch) -> None:
    x, y = sec_batch[0][:4], sec_batch[1][:4]
    with pytest.raises(ModelError, match="not a classifier.*expected 2-D"):
        run_attack(_Seg(), x, y, FGSMConfig())
    with pytest.raises(DataError, match=r"labels must lie in \[0, 9\]"):
        run_attack(lenet5_trained, x, torch.tensor([0, 1, 2, 10]), FGSMConfig())
    with pytest.raises(DataError, match=r"images must lie in \[0, 1\]"):
        run_attack(lenet5_trained, x * 255, y, FGSMConfig())
    with pytest.raises(DataError, match="shape"):
        run_attack(lenet5_trained, x[0], y, FGSMConfig())
    with pytest.raises(ConfigError, match="allowed"):
        run_attack(lenet5_trained, x, y, PGDConfig(eps=40.0, norm="l2"))  # beyond the 28x28 box diameter


def test_normalized_wrapper_matches_manual() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    wrapped = Normalized(net, 0.5, 0.25)
    x = torch.rand(2, 1, 2, 2)
    assert torch.allclose(wrapped(x), net((x - 0.5) / 0.25))
    with pytest.raises(ConfigError, match="std"):
        Normalized(net, 0.0, 0.0)


def test_perturbation_norms_values() -> None:
    x = torch.zeros(2, 1, 2, 2)
    adv = x.clone()
    adv[0, 0, 0, 0] = 0.3
    adv[0, 0, 1, 1] = -0.4
    n = perturbation_norms(x, adv)
    assert n["l0"].tolist() == [2.0, 0.0]
    assert n["l2"][0].item() == pytest.approx(0.5)
    assert n["linf"][0].item() == pytest.approx(0.4)


def test_differentiable_ssim_matches_skimage() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 1, 28, 28, generator=g)
    b = (a + 0.1 * torch.randn(3, 1, 28, 28, generator=g)).clamp(0, 1)
    ours = ssim(a, b)
    ref = [structural_similarity(a[i, 0].numpy(), b[i, 0].numpy(), data_range=1.0) for i in range(3)]
    assert np.allclose(ours.numpy(), ref, atol=1e-4)
    assert torch.allclose(ssim(a, a), torch.ones(3), atol=1e-6)
    r = correlation(a, b)
    ref_r = [np.corrcoef(a[i].flatten().numpy(), b[i].flatten().numpy())[0, 1] for i in range(3)]
    assert np.allclose(r.numpy(), ref_r, atol=1e-5)
    a.requires_grad_(True)
    ssim(a, b).sum().backward()
    assert a.grad is not None and math.isfinite(float(a.grad.abs().sum()))
