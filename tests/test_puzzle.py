"""Puzzle Mix and multi-mix Puzzle Mix: priors steer the masks, weights are the mask means and
ordered, transport only moves whole blocks."""
from __future__ import annotations

import pytest
import torch

from dali_multimix.torch.puzzle import (PuzzleMix, cost_matrix, input_saliency, mask_transport,
                                        transport_blocks)
from train.models import SmallCNN


def model():
    torch.manual_seed(0)
    return SmallCNN(4, 3)


def mask_inputs(seed: int, batch: int = 6):
    """Random images, their saliency under the small model, a partner permutation, a generator."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 32, 32, generator=g)
    saliency = input_saliency(model(), x, torch.arange(batch) % 4)
    return x, saliency, torch.randperm(batch, generator=g), g


@pytest.mark.parametrize("solver", ["exact", "swap"])
def test_prior_follows_lambda(solver):
    """lambda near 0: the masks keep mostly the own image; near 1: mostly the partner."""
    x, saliency, partners, _ = mask_inputs(1)
    pm = PuzzleMix(solver=solver)
    low = pm.masks(saliency, x, partners, torch.full((6, 1), 0.02), block_num=4)
    high = pm.masks(saliency, x, partners, torch.full((6, 1), 0.98), block_num=4)
    assert low.mean() > 0.8 and high.mean() < 0.2


def test_k_masks_from_sorted_ratios_give_ordered_weights():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(8, 3, 32, 32, generator=g)
    result = PuzzleMix(k=5, generator=g)(model(), x, torch.arange(8) % 4)
    assert result.images.shape == (40, 3, 32, 32)
    w = result.weights.view(8, 5)
    assert ((w >= 0) & (w <= 1)).all() and (w.diff(dim=1) >= 0).all()
    assert torch.equal(result.labels, (torch.arange(8) % 4).repeat_interleave(5))


def test_label_weight_is_the_mask_mean():
    """Own image all 0, partner all 1, no transport: the mixed image's mean is the partner
    fraction, which must equal the reported weight."""
    x = torch.cat([torch.zeros(1, 3, 16, 16), torch.ones(1, 3, 16, 16)])
    y = torch.tensor([0, 1])
    for seed in range(6):
        r = PuzzleMix(k=3, transport=False, generator=torch.Generator().manual_seed(seed))(model(), x, y)
        for row in range(6):
            if r.partner_labels[row] != r.labels[row]:
                partner_value = float(r.partner_labels[row])  # label i is image i's value
                own_value = float(r.labels[row])
                frac = (r.images[row].mean() - own_value) / (partner_value - own_value)
                assert abs(frac - r.weights[row]) < 1e-6


def test_transport_moves_whole_blocks_only():
    g = torch.Generator().manual_seed(3)
    n = 4
    images = torch.randn(2, 3, 16, 16, generator=g)
    mask = (torch.rand(2, n, n, generator=g) > 0.4).float()
    saliency = torch.rand(2, n, n, generator=g)
    plan = mask_transport(mask, saliency / saliency.sum((1, 2), keepdim=True), eps=0.8)
    assert (plan.sum(-1) <= 1).all() and (plan.sum(-2) <= 1).all()  # a partial permutation
    moved = transport_blocks(images, plan, n)
    cells = images.unfold(2, 4, 4).unfold(3, 4, 4).reshape(2, 3, n * n, 16)
    out_cells = moved.unfold(2, 4, 4).unfold(3, 4, 4).reshape(2, 3, n * n, 16)
    for b in range(2):
        for j in range(n * n):
            block = out_cells[b, :, j]
            if (block == 0).all():
                continue
            assert any(torch.equal(block, cells[b, :, i]) for i in range(n * n))


def test_cost_matrix_is_normalised_squared_distance():
    c = cost_matrix(3)
    assert c.shape == (9, 9) and c[0, 8] == 2.0 and c[0, 1] == 0.25 and (c.diagonal() == 0).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"`solver` must be one of \['exact', 'swap'\]; got 'qpbo'"):
        PuzzleMix(solver="qpbo")
    with pytest.raises(ValueError, match=r"`k` must be an integer from 1 to 64; got 0"):
        PuzzleMix(k=0)
    with pytest.raises(ValueError, match=r"must be \(B, C, H, W\) with H == W; got \(2, 3, 16, 8\)"):
        PuzzleMix()(model(), torch.zeros(2, 3, 16, 8), torch.zeros(2, dtype=torch.long))


def test_saliencymix_boxes_sit_on_the_partners_saliency_peak():
    """Images whose saliency peaks where they are bright: the partner's box is centred there,
    nested over K, and the weight is its area."""
    from dali_multimix.torch.puzzle import SaliencyMix

    g = torch.Generator().manual_seed(4)
    x = torch.zeros(4, 3, 16, 16)
    peaks = [(3, 4), (12, 10), (8, 8), (1, 14)]
    for i, (py, px) in enumerate(peaks):
        x[i, :, py, px] = 5.0 + i  # a single bright pixel: the input gradient peaks around it
    result = SaliencyMix(k=3, generator=g)(model(), x, torch.arange(4))
    w = result.weights.view(4, 3)
    assert (w.diff(dim=1) >= 0).all()
    for row in range(12):
        partner = int(result.partner_labels[row])
        if partner == int(result.labels[row]):
            continue
        shows_partner = (result.images[row] == x[partner]).all(0) & (x[partner] != x[int(result.labels[row])]).any(0)
        if result.weights[row] > 0.05:
            py, px = peaks[partner]
            assert bool((result.images[row][:, py, px] == x[partner][:, py, px]).all())
        assert shows_partner.float().mean() <= result.weights[row] + 1e-6


@pytest.mark.parametrize("solver", ["exact", "swap"])
def test_worker_processes_give_the_same_masks(solver):
    x, saliency, partners, g = mask_inputs(6)
    lam = torch.sort(torch.rand(6, 3, generator=g), 1).values
    serial = PuzzleMix(solver=solver).masks(saliency, x, partners, lam, block_num=8)
    parallel = PuzzleMix(solver=solver, workers=2).masks(saliency, x, partners, lam, block_num=8)
    assert torch.equal(serial, parallel)
