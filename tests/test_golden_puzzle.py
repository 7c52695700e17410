"""Puzzle Mix against the authors' code (snu-mllab/PuzzleMix, mixup.py: mixup_graph, graphcut_multi,
neigh_penalty, mask_transport, transport_image): fixtures in tests/golden (see its README) hold the
original's masks, transported images, mixed images and ratios for fixed saliency, images, partners,
ratio and block count. Our pipeline given the same inputs must reproduce them: exactly with the
original's solver (gco swap on its integer quantisation); with the exact solver, the same outputs
wherever the masks agree, and a mask of lower or equal energy where swap stopped short."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dali_multimix.torch.puzzle import PuzzleMix, puzzle_energies

GOLDEN = sorted((Path(__file__).parent / "golden").glob("puzzle_*.npz"))


def load(path: Path):
    d = dict(np.load(path))
    pm = dict(mean=d["mean255"].tolist(), std=d["std255"].tolist(), n_labels=int(d["n_labels"]),
              beta=float(d["beta"]), gamma=float(d["gamma"]), eta=float(d["eta"]),
              neigh_size=int(d["neigh_size"]), transport=bool(d["transport"]),
              t_eps=float(d["t_eps"]), t_size=int(d["t_size"]))
    x, saliency, partners = (torch.from_numpy(d[k]) for k in ("x", "saliency", "partners"))
    lam = torch.full((x.shape[0], 1), float(d["lam"]))
    return d, pm, x, saliency, partners, lam, int(d["block_num"])


def test_fixtures_are_there_and_small():
    assert len(GOLDEN) >= 9
    for path in GOLDEN:
        assert path.stat().st_size < 64 * 1024, path.name


def assert_images_and_weights_match(out, d) -> None:
    """Step 0 of `out` (a PuzzleMixed) against the original's transported images, mixed images
    and ratio (to 1e-6); our weight is the partner's share, the original's ratio the own image's."""
    np.testing.assert_allclose(out.own_moved[:, 0].numpy(), d["own_moved"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(out.partner_moved[:, 0].numpy(), d["partner_moved"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(out.images[:, 0].numpy(), d["mixed"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(out.weights[:, 0].numpy(), 1 - d["ratio"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_swap_reproduces_the_original_exactly(path):
    """solver="swap": the original's masks, transported images, mixed images and weights."""
    d, kw, x, saliency, partners, lam, block_num = load(path)
    out = PuzzleMix(1, solver="swap", **kw).mix(x, saliency, partners, lam, block_num)
    np.testing.assert_array_equal(out.masks[:, 0].numpy(), d["masks"])
    assert_images_and_weights_match(out, d)


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_transport_and_mix_of_the_originals_masks(path):
    """Given the original's block masks, our transport and mix give its images, whatever the solver."""
    d, kw, x, saliency, partners, lam, block_num = load(path)
    mask = torch.from_numpy(d["masks"])[:, None]
    out = PuzzleMix(1, **kw).compose(x, saliency, partners, mask)
    assert_images_and_weights_match(out, d)


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_exact_solver_is_never_worse_than_the_original(path):
    """solver="exact": per sample, the original's mask or one of lower energy (swap is a local
    search; one fixture, puzzle_px16_bn4_a0.5_t4 sample 3, has a better mask); same mask -> same images."""
    d, kw, x, saliency, partners, lam, block_num = load(path)
    pm = PuzzleMix(1, solver="exact", **kw)
    out = pm.mix(x, saliency, partners, lam, block_num)
    energies = puzzle_energies(saliency, pm.pixels(x), partners, lam, block_num, n_labels=pm.n_labels,
                               beta=pm.beta, gamma=pm.gamma, eta=pm.eta, neigh_size=pm.neigh_size)
    to_labels = lambda m: np.rint((1 - m) * (pm.n_labels - 1)).astype(np.int64)  # noqa: E731
    for i in range(x.shape[0]):
        ours, theirs = out.masks[i, 0].numpy(), d["masks"][i]
        if np.array_equal(ours, theirs):
            np.testing.assert_allclose(out.images[i, 0].numpy(), d["mixed"][i], rtol=0, atol=1e-6)
        else:
            e = energies[i][0]
            assert e.energy(to_labels(ours)) < e.energy(to_labels(theirs)) - 1e-9


def test_one_fixture_shows_swap_short_of_the_optimum():
    """The exact solver's energy is strictly lower somewhere (else the comparison above is idle)."""
    d, kw, x, saliency, partners, lam, block_num = load(
        next(p for p in GOLDEN if p.stem == "puzzle_px16_bn4_a0.5_t4"))
    out = PuzzleMix(1, solver="exact", **kw).mix(x, saliency, partners, lam, block_num)
    assert not np.array_equal(out.masks[:, 0].numpy(), d["masks"])
