"""Co-Mixup (dali_multimix/torch/comixup.py) against the authors' mixup_process (golden fixtures,
tests/golden/README.md), plus properties of the harness method."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dali_multimix.torch.comixup import (CoMixup, comix_masks, compatibility_distances,
                                         compatibility_matrix, mix_inputs, objective)
from dali_multimix.torch.loss import mixed_cross_entropy

GOLDEN = sorted((Path(__file__).parent / "golden").glob("comixup_*.npz"))


def _load(path):
    d = np.load(path)
    return d, {k: d[k].item() for k in ("m_part", "block_num", "beta", "gamma", "eta", "alpha", "thres",
                                         "set_resolve", "niter", "omega", "num_classes")} | {
        "thres_type": str(d["thres_type"])}


def test_fixtures_present():
    assert len(GOLDEN) == 6


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_golden_masks_images_labels(path):
    d, a = _load(path)
    x, sc = torch.from_numpy(d["x"]), torch.from_numpy(d["saliency"])
    mixer = CoMixup(a["num_classes"], m_part=a["m_part"], block_num=a["block_num"], beta=a["beta"],
                    gamma=a["gamma"], thres=a["thres"], thres_type=a["thres_type"], eta=a["eta"],
                    alpha=a["alpha"], omega=a["omega"], set_resolve=bool(a["set_resolve"]), niter=a["niter"])
    distances = compatibility_distances(sc)
    np.testing.assert_array_equal(distances.numpy(), d["A_dist"])
    parts = int(d["n_parts"])
    priors = [torch.from_numpy(d[f"prior_{p}"]) for p in range(parts)]
    inits = [torch.from_numpy(d[f"init_{p}"]) for p in range(parts)]
    targets = F.one_hot(torch.from_numpy(d["labels"]).long(), a["num_classes"]).float()
    images, soft, masks = mixer.mix(x, targets, sc, distances, a["block_num"], priors, inits)
    for p in range(parts):
        np.testing.assert_array_equal(masks[p].numpy(), d[f"mask_{p}"], err_msg=f"partition {p}")
    np.testing.assert_allclose(images.numpy(), d["mixed"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(soft.numpy(), d["targets"], rtol=0, atol=1e-7)
    # the objective of each partition's labelling equals the original's obj_fn value
    pooled = F.avg_pool2d(sc[:, None], x.shape[-1] // a["block_num"])[:, 0]
    n = a["block_num"]
    for p in range(parts):
        part = pooled[p * a["m_part"]:(p + 1) * a["m_part"]]
        cost = -(part / part.reshape(len(part), -1).sum(1).reshape(-1, 1, 1))
        cost = cost - a["eta"] / n / n * torch.log(priors[p].reshape(-1, 1, 1) + 1e-8)
        value = objective(cost, masks[p], a["beta"] / n / n, a["gamma"] / n / n)
        assert float(value) == pytest.approx(float(d["objectives"][p]), rel=1e-6, abs=1e-6)


def test_sample_matches_the_originals_draws():
    """The original draws its prior with torch's Dirichlet from the global generator; ours draws
    the same numbers from the same state."""
    torch.manual_seed(5)
    expected = torch.distributions.dirichlet.Dirichlet(2.0 * torch.ones(4)).sample()
    torch.manual_seed(5)
    _, priors, inits = CoMixup(3, m_part=4, block_num=2).sample(4, 8)
    torch.testing.assert_close(priors[0], expected, rtol=0, atol=0)
    assert inits[0].shape == (4, 2, 2) and int(inits[0].max()) < 4


def test_soft_labels_are_label_areas():
    mask = torch.zeros(1, 2, 2, 3)
    mask[0, 0, 0, 0] = mask[0, 0, 1, 0] = mask[0, 1, 0, 1] = 1.0
    mask[0, 1, 1, 1] = mask[0, 1, 1, 2] = 0.5
    x = torch.arange(3.0).reshape(3, 1, 1, 1).expand(3, 1, 4, 4).contiguous()
    targets = torch.eye(3)
    out, soft = mix_inputs(mask, x, targets)
    torch.testing.assert_close(soft, torch.tensor([[0.5, 0.375, 0.125]]))
    torch.testing.assert_close(out[0, 0, :2, :], torch.zeros(2, 4))          # input 0's blocks
    torch.testing.assert_close(out[0, 0, 2:, :2], torch.ones(2, 2))          # input 1
    torch.testing.assert_close(out[0, 0, 2:, 2:], torch.full((2, 2), 1.5))   # half of 1 and 2


def test_objective_by_hand():
    cost = torch.tensor([[[-1.0, 0.0]], [[0.0, -2.0]]])  # 2 inputs on a 1 x 2 grid
    mask = F.one_hot(torch.tensor([[[0, 1]], [[0, 0]]]), 2).float()  # 2 outputs
    # unary -1 - 2 - 1 + 0 = -4; one change in output 0: beta/2 * 2; areas (1,1) and (2,0):
    # total (3, 1) -> 10 - (2 + 4) = 4
    assert float(objective(cost, mask, beta=0.5, gamma=0.25)) == pytest.approx(-4 + 0.5 + 1.0)


def test_compatibility_handles_equal_peaks():
    a = compatibility_matrix(torch.zeros(3, 3), 0.25)
    torch.testing.assert_close(a, 0.75 * torch.eye(3))
    a = compatibility_matrix(torch.tensor([[0.0, 2.0], [2.0, 0.0]]), 0.5)
    torch.testing.assert_close(a, torch.tensor([[0.5, 0.5], [0.5, 0.5]]))


def test_diversity_spreads_inputs():
    """With gamma = 0 every output copies the most salient input of every block; the supermodular
    term makes the outputs differ (the point of Co-Mixup)."""
    g = torch.Generator().manual_seed(0)
    cost = -torch.rand(4, 4, 4, generator=g)
    cost = cost / -cost.reshape(4, -1).sum(1).reshape(-1, 1, 1)
    init = torch.randint(4, (4, 4, 4), generator=g)
    prior = torch.full((4,), 0.25)
    flat = comix_masks(cost, torch.eye(4), prior, init, gamma=0.0, eta=0.0)
    assert all(torch.equal(flat[0], flat[i]) for i in range(4))
    diverse = comix_masks(cost, torch.eye(4), prior, init, gamma=1.0, eta=0.0)
    assert not all(torch.equal(diverse[0], diverse[i]) for i in range(4))


def _tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 5))


def test_call_end_to_end_and_clean_loss_gradients():
    model = _tiny_model()
    x, y = torch.randn(7, 3, 16, 16), torch.tensor([0, 1, 2, 3, 4, 0, 1])
    mixer = CoMixup(5, m_part=4, generator=torch.Generator().manual_seed(1))
    result = mixer(model, x, y)
    assert result.images.shape == x.shape and result.labels.shape == (7, 5)
    torch.testing.assert_close(result.labels.sum(1), torch.ones(7))
    # the clean loss's gradients are kept (clean_lam > 0), none without it
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    CoMixup(5, m_part=4, clean_lam=0.0)(model, x, y)
    assert model[0].weight.grad is None
    loss = mixed_cross_entropy(model(result.images), result.labels, result.partner_labels, result.weights)
    assert torch.isfinite(loss)
    # same generator seed -> same batch
    again = CoMixup(5, m_part=4, generator=torch.Generator().manual_seed(1))(model, x, y)
    torch.testing.assert_close(again.images, result.images)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_classes=0), "num_classes"), (dict(num_classes=3, m_part=0), "m_part"),
    (dict(num_classes=3, block_num=0), "block_num"), (dict(num_classes=3, thres_type="x"), "thres_type"),
    (dict(num_classes=3, alpha=0.0), "alpha"), (dict(num_classes=3, clean_lam=-1.0), "clean_lam"),
])
def test_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CoMixup(**kwargs)


def test_call_errors():
    mixer = CoMixup(3, block_num=3)
    with pytest.raises(ValueError, match="y"):
        mixer(_tiny_model(), torch.randn(2, 3, 8, 8), torch.tensor([0]))
    with pytest.raises(ValueError, match="labels"):
        mixer(_tiny_model(), torch.randn(2, 3, 9, 9), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="block_num"):
        mixer(_tiny_model(), torch.randn(2, 3, 8, 8), torch.tensor([0, 1]))
