"""AdaFocal's end-of-epoch update against a numpy transcription of the paper's rule (equal-mass
validation bins as np.interp builds them), the switch to inverse focal, and the bins of p_y."""

import numpy as np
import pytest
import torch

from calbench.methods import create_method

from .references.core import softmax


def numpy_update(gammas, logits, targets, lam=1.0, switch=0.2, gamma_min=-2.0, gamma_max=20.0):
    p = softmax(logits)
    conf, correct = p.max(axis=1), (p.argmax(axis=1) == targets).astype(float)
    bins = len(gammas)
    edges = np.interp(np.linspace(0, len(conf), bins + 1), np.arange(len(conf)), np.sort(conf))
    index = np.array([int(np.sum(c >= edges[1:-1])) for c in conf])
    new = []
    for b, g in enumerate(gammas):
        members = index == b
        gap = (conf[members] - correct[members]).mean() if members.any() else 0.0
        g = g * np.exp(lam * gap) if g > 0 else g * np.exp(-lam * gap)
        if abs(g) < switch:
            g = -switch if g > 0 else switch
        new.append(min(max(g, gamma_min), gamma_max))
    return np.array(new), edges


def validation(seed, n=200, k=6, scale=4.0, accuracy=0.5):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * scale
    targets = np.where(rng.random(n) < accuracy, logits.argmax(axis=1), rng.integers(0, k, n))
    return logits, targets


def test_end_epoch_matches_the_numpy_rule_over_several_epochs():
    method = create_method("adafocal", 6)
    gammas = np.full(15, 1.0)
    for epoch, (scale, accuracy) in enumerate([(6.0, 0.3), (1.0, 0.95), (0.5, 1.0), (3.0, 0.6)]):
        logits, targets = validation(epoch, scale=scale, accuracy=accuracy)
        gammas, edges = numpy_update(gammas, logits, targets)
        method.end_epoch(torch.tensor(logits, dtype=torch.float32), torch.tensor(targets), epoch)
        assert np.allclose(method.edges.numpy(), edges, rtol=0, atol=1e-6)
        assert np.allclose(method.gammas.numpy(), gammas, rtol=1e-5, atol=1e-6)
    assert (method.gammas < 0).any() and (method.gammas > 0).any()     # focal and inverse focal bins


def test_underconfident_validation_switches_to_inverse_focal_and_back():
    method = create_method("adafocal", 4, num_bins=1, gamma_initial=0.3)
    under = torch.zeros(50, 4), torch.zeros(50, dtype=torch.long)    # conf 1/4, accuracy 1: gap -0.75
    method.end_epoch(*under, 0)
    assert float(method.gammas[0]) == -0.2                          # 0.3 e^-0.75 = 0.14 < 0.2: switch
    over = torch.eye(4).repeat(10, 1) * 20, torch.ones(40, dtype=torch.long)   # conf ~1, accuracy 1/4
    method.end_epoch(*over, 1)                                       # -0.2 e^-0.75 = -0.094: switch back
    assert float(method.gammas[0]) == 0.2


def test_training_rows_take_the_gamma_of_their_target_probability_bin():
    method = create_method("adafocal", 2, num_bins=3)
    method.edges.copy_(torch.tensor([0.1, 0.4, 0.8, 0.95], dtype=torch.float64))
    method.gammas.copy_(torch.tensor([2.0, -1.0, 0.0], dtype=torch.float64))
    p = torch.tensor([0.05, 0.4, 0.79, 0.8, 0.99], dtype=torch.float64)
    logits = torch.stack([torch.log(p), torch.log1p(-p)], dim=1)
    got = torch.stack([method.loss(logits[i:i + 1], torch.zeros(1, dtype=torch.long)) for i in range(5)])
    want = -torch.log(p) * torch.tensor([0.95 ** 2, 1.4 ** 1, 1.79 ** 1, 1.0, 1.0], dtype=torch.float64)
    assert torch.allclose(got, want, rtol=1e-12)


def test_state_round_trip_resumes_the_gammas():
    a = create_method("adafocal", 6)
    logits, targets = validation(3, scale=5.0)
    a.end_epoch(torch.tensor(logits), torch.tensor(targets), 0)
    b = create_method("adafocal", 6)
    b.load_state_dict(a.state_dict())
    x, y = torch.randn(20, 6) * 3, torch.randint(0, 6, (20,))
    assert torch.equal(a.loss(x, y), b.loss(x, y))


@pytest.mark.parametrize("bad", [{"num_bins": 0}, {"switch": -1.0}, {"gamma_min": 3.0, "gamma_max": 1.0}])
def test_bad_settings_are_config_errors(bad):
    from calbench.errors import ConfigError
    with pytest.raises(ConfigError):
        create_method("adafocal", 3, **bad)
