"""Puzzle Mix and multi-mix Puzzle Mix: priors steer the masks, the K masks spread with lambda at
the original's pixel scale, weights are the mask means and ordered, transport only moves whole
blocks, every image size works by the documented rules, the clean loss is scaled under AMP, the
partner labels are those of the partners used; SaliencyMix's weights are the clipped box areas."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dali_multimix import sampling
from dali_multimix.torch.puzzle import (MAX_TRANSPORT_GRID, PuzzleMix, SaliencyMix, block_choices,
                                        check_pixel_stats, cost_matrix, input_saliency,
                                        mask_transport, neighbourhood_size, transport_blocks,
                                        transport_grid, transport_sources)
from dali_multimix.torch.graphcut import native_available, transport_native
from train.models import SmallCNN

MEAN = [129.3, 124.1, 112.4]  # CIFAR-100, 0..255 scale (what fn.crop_mirror_normalize takes)
STD = [68.2, 65.4, 70.4]


def model(classes: int = 4):
    torch.manual_seed(0)
    return SmallCNN(classes, 3)


def mask_inputs(seed: int, batch: int = 6):
    """Random images, their saliency under the small model, a partner permutation, a generator."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 32, 32, generator=g)
    saliency = input_saliency(model(), x, torch.arange(batch) % 4)
    return x, saliency, torch.randperm(batch, generator=g), g


def eight_photos(size: int = 32) -> np.ndarray:
    """Eight real photos from scikit-image, centre-cropped square and resized: (8, size, size, 3)."""
    from PIL import Image
    from skimage import data

    out = []
    for load in (data.astronaut, data.chelsea, data.coffee, data.rocket, data.hubble_deep_field,
                 data.retina, data.immunohistochemistry, lambda: data.stereo_motorcycle()[0]):
        img = load()
        h, w = img.shape[:2]
        s = min(h, w)
        crop = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        out.append(np.asarray(Image.fromarray(crop).resize((size, size), Image.BILINEAR)))
    return np.stack(out)


def normalise(photos: np.ndarray) -> torch.Tensor:
    p = torch.from_numpy(photos).permute(0, 3, 1, 2).float()
    return (p - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


# ---------------------------------------------------------------- pixel scale (mean / std)

def test_masks_spread_with_lambda_at_the_originals_pixel_scale():
    """8 real photos, 32x32, K=5, lambda = .1 .3 .5 .7 .9, 4 blocks per side: the mean partner
    fraction per step spreads as the original's ([0, 0, .5, .98, 1] measured); with the border
    term on 0..255 pixels (255x too strong) it collapsed toward the middle ([.48 .50 .51 .51 .60])."""
    x = normalise(eight_photos(32))
    saliency = input_saliency(model(10), x, torch.arange(8))
    partners = torch.roll(torch.arange(8), 1)
    lambdas = torch.tensor([.1, .3, .5, .7, .9]).repeat(8, 1)
    out = PuzzleMix(k=5, mean=MEAN, std=STD).mix(x, saliency, partners, lambdas, 4)
    frac = out.weights.mean(0)
    assert frac[0] < 0.05 and frac[1] < 0.1, frac
    assert 0.4 < frac[2] < 0.6, frac
    assert frac[3] > 0.9 and frac[4] > 0.95, frac
    assert torch.allclose(out.weights, 1 - out.masks.flatten(2).mean(2))


@pytest.mark.parametrize("kwargs, message", [
    (dict(), r"`mean` is required: .* 0\.\.255 scale .*; got None"),
    (dict(mean=MEAN), r"`std` is required: .*; got None"),
    (dict(mean=[0.507, 0.487, 0.441], std=[0.267, 0.256, 0.276]),
     r"`mean` and `std` must be on the 0\.\.255 scale .* look like \[0, 1\]-scale numbers"),
    (dict(mean=[129.3, float("nan"), 112.4], std=STD), r"`mean` must be finite; got \[129\.3, nan, 112\.4\]"),
    (dict(mean=MEAN, std=[68.2, 0.0, 70.4]), r"`std` must be > 0 in every channel; got \[68\.2, 0\.0, 70\.4\]"),
    (dict(mean=MEAN, std=[68.2, float("inf"), 70.4]), r"`std` must be finite"),
    (dict(mean=[300.0] * 3, std=STD), r"`mean` must lie in 0\.\.255"),
    (dict(mean="abc", std=STD), r"`mean` must be a sequence of numbers"),
])
def test_bad_pixel_statistics_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PuzzleMix(**kwargs)


def test_pixel_statistics_must_match_the_channels():
    pm = PuzzleMix(mean=MEAN, std=STD)
    with pytest.raises(ValueError, match=r"`mean` must have one value per channel \(1 for these images\) "
                                         r"or a single value; got 3"):
        pm(model(), torch.zeros(2, 1, 16, 16), torch.zeros(2, dtype=torch.long))
    assert check_pixel_stats([72.9], [90.0], 1) == ((72.9,), (90.0,))


def test_pixels_are_on_the_unit_scale():
    x = normalise(eight_photos(16)[:2])
    pixels = PuzzleMix(mean=MEAN, std=STD).pixels(x)
    expect = torch.from_numpy(eight_photos(16)[:2]).permute(0, 3, 1, 2).float() / 255
    assert torch.allclose(pixels, expect, atol=1e-5)


# ---------------------------------------------------------------- masks and weights

@pytest.mark.parametrize("solver", ["exact", "swap"])
def test_prior_follows_lambda(solver):
    """lambda near 0: the masks keep mostly the own image; near 1: mostly the partner."""
    x, saliency, partners, _ = mask_inputs(1)
    pm = PuzzleMix(solver=solver, mean=MEAN, std=STD)
    pixels = pm.pixels(x)
    low = pm.masks(saliency, pixels, partners, torch.full((6, 1), 0.02), block_num=4)
    high = pm.masks(saliency, pixels, partners, torch.full((6, 1), 0.98), block_num=4)
    assert low.mean() > 0.8 and high.mean() < 0.2


def test_k_masks_from_sorted_ratios_give_ordered_weights():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(8, 3, 32, 32, generator=g)
    result = PuzzleMix(k=5, mean=MEAN, std=STD, generator=g)(model(), x, torch.arange(8) % 4)
    assert result.images.shape == (40, 3, 32, 32)
    w = result.weights.view(8, 5)
    assert ((w >= 0) & (w <= 1)).all() and (w.diff(dim=1) >= 0).all()
    assert torch.equal(result.labels, (torch.arange(8) % 4).repeat_interleave(5))


def test_call_is_sample_then_mix_with_the_partners_it_used():
    """Constant images (image i has value i, label i), no transport: replaying the generator gives
    the block count, partners and ratios __call__ used; the partner labels are exactly y[partners];
    each row is the mix of its own and its partner's image with the reported weight, and equals
    mix() of the same randomness, steps ordered by weight."""
    batch, k = 5, 3
    x = torch.arange(batch, dtype=torch.float32).view(batch, 1, 1, 1).expand(batch, 3, 16, 16).contiguous()
    y = torch.arange(batch)
    fixed_point_seen = False
    for seed in range(6):
        pm = PuzzleMix(k=k, transport=False, mean=MEAN, std=STD, generator=torch.Generator().manual_seed(seed))
        r = pm(model(5), x, y)
        block_num, partners, lambdas = pm.sample(batch, 16, torch.Generator().manual_seed(seed))
        assert torch.equal(r.partner_labels, y[partners].repeat_interleave(k))
        assert torch.equal(r.labels, y.repeat_interleave(k))
        saliency = input_saliency(model(5), x, y)
        direct = pm.mix(x, saliency, partners, lambdas, block_num)
        order = direct.weights.argsort(dim=1, stable=True)
        assert torch.equal(r.weights.view(batch, k), direct.weights.gather(1, order))
        for row in range(batch * k):
            own, partner = row // k, int(partners[row // k])
            image = r.images[row]
            if partner == own:
                fixed_point_seen = True
                assert (image == own).all()
                continue
            frac = (image.mean() - own) / (partner - own)
            assert abs(frac - r.weights[row]) < 1e-6
            assert set(image.unique().tolist()) <= {float(own), float(partner), (own + partner) / 2}
    assert fixed_point_seen  # the case where reading the labels off the rows would hide an error


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


def dense_mask_transport(mask, saliency, eps):
    """The original's rounds on dense one-hot plans (PuzzleMix mixup.py ``mask_transport``), the
    reference for the sparse rounds of mask_transport."""
    batch, n = mask.shape[0], mask.shape[-1]
    cost = eps * cost_matrix(n) - saliency.reshape(batch, -1, 1) * (mask > 0).float().reshape(batch, 1, -1)
    plan_win = torch.zeros_like(cost)
    for _ in range(n):
        plan = torch.zeros_like(cost).scatter_(-1, cost.argmin(-1, keepdim=True), 1)
        winners = (plan * cost).argmin(-2, keepdim=True)
        plan_win = torch.zeros_like(cost).scatter_(-2, winners, 1) * plan
        cost = cost + (1 - plan_win) * plan
    return plan_win


TRANSPORT_BACKENDS = ["torch", pytest.param("native", marks=pytest.mark.skipif(
    not native_available(), reason="libmultimix_graphcut.so not built"))]


@pytest.mark.parametrize("backend", TRANSPORT_BACKENDS)
@pytest.mark.parametrize("n", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("case", ["random", "ties", "flat saliency", "empty mask", "full mask",
                                  "signed saliency", "signed saliency, full mask",
                                  "negative saliency, full mask"])
def test_mask_transport_equals_the_originals_dense_rounds(n, case, backend):
    """Ties, zero-cost claims and positive-cost claims (signed saliency: a destination whose
    claims all cost more than the 0 of the sources that did not claim it) included; the torch
    rounds and the native ones (csrc/puzzle_transport.h) each against the original's."""
    g = torch.Generator().manual_seed(n)
    batch = 12
    mask = (torch.rand(batch, n, n, generator=g) > 0.5).float()
    saliency = torch.rand(batch, n, n, generator=g)
    if case == "ties":  # a few saliency levels: equal costs everywhere
        saliency = torch.randint(0, 3, (batch, n, n), generator=g).float()
    elif case == "flat saliency":
        saliency = torch.zeros(batch, n, n)
    elif case == "empty mask":
        mask = torch.zeros(batch, n, n)
    elif case.endswith("full mask"):
        mask = torch.ones(batch, n, n)
    saliency = saliency / saliency.sum((1, 2), keepdim=True).clamp_min(1e-12)
    if case.startswith("signed"):
        saliency = torch.randint(-2, 3, (batch, n, n), generator=g).float() / n ** 2
    elif case.startswith("negative"):  # with eps 0 every source claims cell 0 at a positive cost
        saliency = -saliency
    for eps in (0.8, 0.0, 0.3):
        assert torch.equal(mask_transport(mask, saliency, eps, backend=backend),
                           dense_mask_transport(mask, saliency, eps))


@pytest.mark.skipif(not native_available(), reason="libmultimix_graphcut.so not built")
def test_native_transport_equals_the_torch_rounds_on_puzzle_mix_inputs():
    """Many grids over threads, with the saliency and masks Puzzle Mix gives it (normalised block
    saliency, 0 / 0.5 / 1 masks and their complements), every grid size it uses."""
    g = torch.Generator().manual_seed(11)
    for n, grids in ((2, 300), (4, 300), (8, 300), (16, 300), (32, 3)):  # 32: the native limit
        saliency = torch.rand(grids, n, n, generator=g) ** 3
        saliency = saliency / saliency.sum((1, 2), keepdim=True)
        mask = torch.randint(0, 3, (grids, n, n), generator=g).float() / 2
        for m in (mask, 1 - mask):
            native = transport_sources(m, saliency, 0.8, backend="native")
            assert native.dtype == torch.long and native.shape == (grids, n * n)
            assert torch.equal(native, transport_sources(m, saliency, 0.8, backend="torch"))
            filled = native[native < n * n]
            assert len(filled) > 0
            for row in native:  # a partial permutation: no source moves twice
                moved = row[row < n * n]
                assert len(moved.unique()) == len(moved)


@pytest.mark.skipif(not native_available(), reason="libmultimix_graphcut.so not built")
def test_compose_transports_natively_and_in_torch_alike():
    """On CPU tensors solver "native" transports natively, "maxflow" in torch operations: the
    same images."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(8, 3, 32, 32, generator=g)
    saliency = torch.rand(8, 32, 32, generator=g)
    partners = torch.randperm(8, generator=g)
    for block_num in (2, 8, 16):
        mask = torch.randint(0, 3, (8, 3, block_num, block_num), generator=g).float() / 2
        native = PuzzleMix(3, solver="native", mean=MEAN, std=STD).compose(x, saliency, partners, mask)
        torch_ = PuzzleMix(3, solver="maxflow", mean=MEAN, std=STD).compose(x, saliency, partners, mask)
        assert torch.equal(native.images, torch_.images) and torch.equal(native.own_moved, torch_.own_moved)
        assert torch.equal(native.partner_moved, torch_.partner_moved)
        assert not torch.equal(native.own_moved, x[:, None].expand_as(native.own_moved))  # blocks did move


def test_transport_sources_refuses_an_unknown_backend():
    with pytest.raises(ValueError, match=r"`backend` must be one of \('auto', 'native', 'torch'\); got 'gpu'"):
        transport_sources(torch.ones(1, 2, 2), torch.ones(1, 2, 2), 0.8, backend="gpu")


@pytest.mark.skipif(not native_available(), reason="libmultimix_graphcut.so not built")
def test_transport_native_refuses_bad_shapes():
    with pytest.raises(ValueError, match=r"`mask` and `saliency` must both be \(G, n, n\); got \(2, 3, 4\)"):
        transport_native(np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), 0.8)
    with pytest.raises(ValueError, match=r"got \(2, 3, 3\) and \(2, 3\)"):
        transport_native(np.zeros((2, 3, 3)), np.zeros((2, 3)), 0.8)
    with pytest.raises(ValueError, match=r"grids of 1 to 32 cells per side; got 33"):
        transport_native(np.zeros((1, 33, 33)), np.zeros((1, 33, 33)), 0.8)
    with pytest.raises(ValueError, match=r"`threads` must be an integer >= 0 \(0: one per CPU\); got -1"):
        transport_native(np.zeros((1, 3, 3)), np.zeros((1, 3, 3)), 0.8, threads=-1)
    # a grid past the native limit goes to the torch rounds under "auto"
    big = torch.rand(1, 33, 33, generator=torch.Generator().manual_seed(0))
    assert torch.equal(transport_sources((big > 0.5).float(), big, 0.8),
                       transport_sources((big > 0.5).float(), big, 0.8, backend="torch"))
    with pytest.raises(TypeError, match=r"`saliency` must be an array of numbers; got str"):
        transport_native(np.zeros((1, 3, 3)), "abc", 0.8)
    assert transport_native(np.zeros((0, 3, 3)), np.zeros((0, 3, 3)), 0.8).shape == (0, 9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_transport_blocks_equals_the_plan_product(dtype):
    g = torch.Generator().manual_seed(5)
    n = 4
    images = torch.randn(6, 3, 16, 16, generator=g).to(dtype)
    mask = (torch.rand(6, n, n, generator=g) > 0.5).float()
    saliency = torch.rand(6, n, n, generator=g)
    plan = mask_transport(mask, saliency / saliency.sum((1, 2), keepdim=True), eps=0.8)
    assert bool((plan.sum(1) == 0).any())  # some cells are left empty
    cells = images.reshape(6, 3, n, 4, n, 4).permute(0, 1, 2, 4, 3, 5).reshape(6, 3, n * n, -1)
    product = torch.einsum("bij,bcip->bcjp", plan.to(dtype), cells)
    expected = product.reshape(6, 3, n, n, 4, 4).permute(0, 1, 2, 4, 3, 5).reshape(6, 3, 16, 16)
    assert torch.equal(transport_blocks(images, plan, n), expected)


def test_cost_matrix_is_normalised_squared_distance():
    c = cost_matrix(3)
    assert c.shape == (9, 9) and c[0, 8] == 2.0 and c[0, 1] == 0.25 and (c.diagonal() == 0).all()


# ---------------------------------------------------------------- any image size

def test_size_rules():
    """The documented rules, equal to the original's wherever it runs (32 px, neigh 4, t_size 4)."""
    assert block_choices(28, (2, 4, 8, 16)) == [2, 4]
    assert block_choices(96, (2, 4, 8, 16)) == [2, 4, 8, 16]
    for block in (16, 8, 4, 2):  # CIFAR: min(4, block)
        assert neighbourhood_size(block, 4) == min(4, block)
    assert [neighbourhood_size(b, 4) for b in (14, 7, 6, 10, 3)] == [2, 1, 3, 2, 3]
    assert [transport_grid(32, n, 4) for n in (2, 4, 8, 16)] == [8, 8, 8, 16]
    assert [transport_grid(32, n, -1) for n in (2, 4, 8, 16)] == [2, 4, 8, 16]
    assert [transport_grid(64, n, 4) for n in (2, 4, 8, 16)] == [16, 16, 16, 16]
    assert [transport_grid(224, n, 4) for n in (2, 4, 8, 16)] == [2, 4, 8, 16]  # 56 > 16 cells
    assert transport_grid(28, 2, 4) == 14 and transport_grid(28, 4, 4) == 4  # 1-px cells: 28 > 16
    assert MAX_TRANSPORT_GRID == 16


@pytest.mark.parametrize("size", [28, 32, 64, 96, 160, 224])
def test_every_size_and_block_count(size):
    """Each usable block count at each size: masks, weights = 1 - mask mean, transported images made
    of whole transport cells; block counts that do not divide the side are refused by mix() and
    never drawn by __call__."""
    g = torch.Generator().manual_seed(size)
    batch = 2
    x = torch.randn(batch, 3, size, size, generator=g)
    saliency = torch.rand(batch, size, size, generator=g) + 0.05
    partners = torch.tensor([1, 0])
    lambdas = torch.tensor([[0.3, 0.7]]).repeat(batch, 1)
    pm = PuzzleMix(k=2, mean=MEAN, std=STD)
    usable = block_choices(size, pm.block_nums)
    assert usable == [n for n in (2, 4, 8, 16) if size % n == 0]
    for block_num in (2, 4, 8, 16):
        if block_num not in usable:
            with pytest.raises(ValueError, match=r"`block_num` must be an integer dividing the image side"):
                pm.mix(x, saliency, partners, lambdas, block_num)
            continue
        out = pm.mix(x, saliency, partners, lambdas, block_num)
        assert out.images.shape == (batch, 2, 3, size, size) and out.masks.shape == (batch, 2, block_num, block_num)
        assert torch.allclose(out.weights, 1 - out.masks.flatten(2).mean(2))
        cells = transport_grid(size, block_num, pm.t_size)
        c = size // cells
        src = x.unfold(2, c, c).unfold(3, c, c).reshape(batch, 3, -1, c * c)
        moved = out.own_moved[:, 0].unfold(2, c, c).unfold(3, c, c).reshape(batch, 3, -1, c * c)
        for b in range(batch):
            for j in range(cells * cells):
                if (moved[b, :, j] == 0).all():
                    continue
                assert (moved[b, :, j][None] == src[b].transpose(0, 1)).all(-1).all(-1).any()
    drawn = {PuzzleMix(mean=MEAN, std=STD).sample(2, size, torch.Generator().manual_seed(s))[0] for s in range(30)}
    assert drawn <= set(usable)


def test_fashion_mnist_size_runs_end_to_end():
    """28x28 grey images (Fashion-MNIST) through __call__: used to crash at 4 blocks."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 28, 28, generator=g)
    torch.manual_seed(0)
    net = SmallCNN(10, 1)
    for seed in range(4):
        r = PuzzleMix(k=5, mean=[72.9], std=[90.0], generator=torch.Generator().manual_seed(seed))(
            net, x, torch.arange(4))
        assert r.images.shape == (20, 1, 28, 28)


def test_no_usable_block_count_is_an_error():
    with pytest.raises(ValueError, match=r"no block count of `block_nums` \(8, 16\) divides the image side 28"):
        PuzzleMix(block_nums=(8, 16), mean=MEAN, std=STD)(model(), torch.zeros(2, 3, 28, 28),
                                                         torch.zeros(2, dtype=torch.long))


# ---------------------------------------------------------------- clean loss under AMP

def test_clean_loss_is_scaled_by_the_grad_scaler():
    """clean_lam > 0: with an enabled GradScaler passed as `scaler`, the clean loss's parameter
    gradients after unscale_ equal those of the run without mixed precision, and so do the mixes."""
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(4, 3, 16, 16, generator=g), torch.arange(4)

    def run(scaler):
        net = model()
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        opt.zero_grad()
        r = PuzzleMix(1, clean_lam=1.0, mean=MEAN, std=STD, generator=torch.Generator().manual_seed(1))(
            net, x, y, scaler=scaler)
        if scaler is not None:
            scaler.unscale_(opt)
        return [p.grad.clone() for p in net.parameters()], r

    plain, r_plain = run(None)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    assert scaler.is_enabled()
    scaled, r_scaled = run(scaler)
    for a, b in zip(plain, scaled):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    assert torch.allclose(r_plain.images, r_scaled.images) and torch.equal(r_plain.weights, r_scaled.weights)
    sal_plain = input_saliency(model(), x, y, 1.0)
    sal_scaled = input_saliency(model(), x, y, 1.0, scaler=torch.amp.GradScaler("cpu", init_scale=2.0 ** 12))
    assert torch.allclose(sal_plain, sal_scaled, rtol=1e-5, atol=1e-9)  # the saliency is unscaled too
    with pytest.raises(TypeError, match=r"`scaler` must be a torch.amp.GradScaler or None; got float"):
        PuzzleMix(mean=MEAN, std=STD)(model(), x, y, scaler=2.0)


# ---------------------------------------------------------------- lambda_scope

@pytest.mark.parametrize("scope", ["batch", "sample"])
def test_puzzle_lambda_scope(scope):
    pm = PuzzleMix(k=3, lambda_scope=scope, mean=MEAN, std=STD)
    _, _, lambdas = pm.sample(6, 32, torch.Generator().manual_seed(3))
    assert lambdas.shape == (6, 3) and (lambdas.diff(dim=1) >= 0).all()
    same = bool((lambdas == lambdas[:1]).all())
    assert same if scope == "batch" else not same
    with pytest.raises(ValueError, match=r"PuzzleMix: `lambda_scope`: expected one of \('batch', 'sample'\); got 'pair'"):
        PuzzleMix(lambda_scope="pair", mean=MEAN, std=STD)


# ---------------------------------------------------------------- SaliencyMix

def clipped_box_fraction(h, w, lam, cy, cx):
    """The partner's share of a CutMix box of round(H sqrt(lam)) x round(W sqrt(lam)) around (cy, cx)
    spanning [c - side // 2, c - side // 2 + side), clipped to the image."""
    bh, bw = int(np.floor(h * np.sqrt(lam) + 0.5)), int(np.floor(w * np.sqrt(lam) + 0.5))
    top, left = cy - bh // 2, cx - bw // 2
    rows = max(0, min(h, top + bh) - max(0, top))
    cols = max(0, min(w, left + bw) - max(0, left))
    return rows * cols / (h * w)


@pytest.mark.parametrize("scope", ["batch", "sample"])
def test_saliencymix_boxes_sit_on_the_partners_saliency_peak(scope):
    """Images whose saliency peaks where they are bright (non-square, boxes clipped at the edges):
    the partner's box is centred on the partner's peak (per sample, whatever the scope), nested over
    K, the weight is exactly the clipped box area / HW for the lambda used, and the partner labels
    are those of the partners used."""
    h, w, batch, k = 16, 20, 4, 3
    x = torch.zeros(batch, 3, h, w)
    peaks = [(3, 4), (12, 17), (8, 8), (1, 18)]
    for i, (py, px) in enumerate(peaks):
        x[i, :, py, px] = 5.0 + i
    x += torch.arange(batch).view(batch, 1, 1, 1) * 0.01  # every image distinct everywhere
    y = torch.tensor([3, 1, 0, 2])
    net = model()
    for seed in range(3):
        result = SaliencyMix(k=k, lambda_scope=scope, generator=torch.Generator().manual_seed(seed))(net, x, y)
        replay = torch.Generator().manual_seed(seed)
        partners = sampling.sample_partners(batch, generator=replay)
        lambdas = sampling.sample_lambdas(batch, k, 1.0, lambda_scope=scope, generator=replay)
        assert bool((lambdas == lambdas[:1]).all()) == (scope == "batch")
        assert torch.equal(result.partner_labels, y[partners].repeat_interleave(k))
        saliency = input_saliency(net, x, y)
        centers = SaliencyMix.centers(saliency, partners)
        weights = result.weights.view(batch, k)
        assert (weights.diff(dim=1) >= 0).all()
        for b in range(batch):
            p = int(partners[b])
            flat = int(saliency[p].flatten().argmax())
            assert tuple(centers[b].tolist()) == (flat // w, flat % w)
            for step in range(k):
                expect = clipped_box_fraction(h, w, float(lambdas[b, step]), *centers[b].tolist())
                assert abs(float(weights[b, step]) - expect) < 1e-6
                image = result.images[b * k + step]
                from_partner = (image == x[p]).all(0)
                if p != b:
                    assert abs(float(from_partner.float().mean()) - expect) < 1e-6
                    assert ((image == x[b]).all(0) | from_partner).all()


# ---------------------------------------------------------------- arguments and workers

def test_bad_arguments():
    with pytest.raises(ValueError, match=r"`solver` must be one of \['exact', 'swap', 'native', 'maxflow'\]; got 'qpbo'"):
        PuzzleMix(solver="qpbo", mean=MEAN, std=STD)
    with pytest.raises(ValueError, match=r"`k` must be an integer from 1 to 64; got 0"):
        PuzzleMix(k=0, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match=r"`t_size` must be an integer >= 1, or -1"):
        PuzzleMix(t_size=0, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match=r"must be \(B, C, H, W\) with H == W; got \(2, 3, 16, 8\)"):
        PuzzleMix(mean=MEAN, std=STD)(model(), torch.zeros(2, 3, 16, 8), torch.zeros(2, dtype=torch.long))
    pm = PuzzleMix(mean=MEAN, std=STD)
    x, s = torch.zeros(2, 3, 16, 16), torch.ones(2, 16, 16)
    with pytest.raises(ValueError, match=r"`partners` must be a permutation of 0..1; got \[0, 0\]"):
        pm.mix(x, s, torch.tensor([0, 0]), torch.full((2, 1), 0.5), 4)
    with pytest.raises(ValueError, match=r"`lambdas` must be \(B, K\) = \(2, K\) values in \[0, 1\]"):
        pm.mix(x, s, torch.tensor([1, 0]), torch.full((2, 1), 1.5), 4)


@pytest.mark.parametrize("solver", ["exact", "swap"])
def test_worker_processes_give_the_same_masks(solver):
    x, saliency, partners, g = mask_inputs(6)
    lam = torch.sort(torch.rand(6, 3, generator=g), 1).values
    serial = PuzzleMix(solver=solver, mean=MEAN, std=STD)
    parallel = PuzzleMix(solver=solver, workers=2, mean=MEAN, std=STD)
    pixels = serial.pixels(x)
    assert torch.equal(serial.masks(saliency, pixels, partners, lam, block_num=8),
                       parallel.masks(saliency, pixels, partners, lam, block_num=8))


# ---------------------------------------------------------------- worker processes

SCRIPT_WITHOUT_MAIN_GUARD = """
import torch
from dali_multimix.torch.puzzle import PuzzleMix, input_saliency
from train.models import SmallCNN
torch.manual_seed(0)
x = torch.randn(4, 3, 16, 16)
saliency = input_saliency(SmallCNN(4, 3), x, torch.arange(4))
mixer = PuzzleMix(2, mean=[129.3, 124.1, 112.4], std=[68.2, 65.4, 70.4], solver="swap", workers=2)
try:
    mixer.mix(x, saliency, torch.tensor([1, 0, 3, 2]), torch.tensor([[0.3, 0.7]] * 4), 4)
except RuntimeError as err:
    if __name__ != "__main__":  # a spawned worker re-running this script: it dies, as a user's would
        raise
    print("CAUGHT:", err)
"""


def test_workers_in_a_script_without_main_guard_fail_with_the_cause(tmp_path):
    """Spawned workers re-import the main script; without an ``if __name__ == "__main__":`` guard
    they die. The user gets a RuntimeError that says so, not a bare BrokenProcessPool."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "no_guard.py"
    script.write_text(SCRIPT_WITHOUT_MAIN_GUARD)
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          env=env, cwd=tmp_path)
    out = done.stdout
    assert "CAUGHT: PuzzleMix: the 2 graph-cut worker processes" in out, (out, done.stderr[-2000:])
    assert "workers=2" in out and 'if __name__ == "__main__":' in out
