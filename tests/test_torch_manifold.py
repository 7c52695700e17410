"""Manifold multi-mix through hooks equals an explicit re-implementation; detaching restores the
model; eval mode is untouched."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dali_multimix.torch import ManifoldMultiMix, mix_activations, mixed_cross_entropy


def small_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),       # "0", "1"
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),       # "2", "3"
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))


def mix_by_hand(h: torch.Tensor, lam: torch.Tensor, partners: torch.Tensor) -> torch.Tensor:
    """Manifold multi-mix written out, independently of the library's mix_activations: row
    b*K + k is (1 - lam[b, k]) h[b] + lam[b, k] h[partners[b]]."""
    batch, k = lam.shape
    rows = []
    for b in range(batch):
        for s in range(k):
            w = float(lam[b, s])
            rows.append((1.0 - w) * h[b] + w * h[int(partners[b])])
    return torch.stack(rows)


def explicit_forward(model: nn.Sequential, x: torch.Tensor, layer: str, lam, partners):
    """The same network run by hand, mixing after `layer` ("" = the input)."""
    h = x
    if layer == "":
        h = mix_by_hand(h, lam, partners)
    for name, module in model.named_children():
        h = module(h)
        if name == layer:
            h = mix_by_hand(h, lam, partners)
    return h


def test_mix_activations_by_hand():
    """Fixed ratios and partners, values written out: lambda on the partner, partners[b] the
    partner of b, row b*K + k."""
    h = torch.arange(3 * 2, dtype=torch.float32).reshape(3, 2) ** 2     # rows [0,1], [4,9], [16,25]
    lam = torch.tensor([[0.25, 0.5, 1.0], [0.0, 0.1, 0.75], [0.2, 0.4, 0.6]])
    partners = torch.tensor([2, 0, 0])
    expected = torch.tensor([
        [0.75 * 0 + 0.25 * 16, 0.75 * 1 + 0.25 * 25],
        [0.5 * 0 + 0.5 * 16, 0.5 * 1 + 0.5 * 25],
        [16.0, 25.0],
        [4.0, 9.0],
        [0.9 * 4 + 0.1 * 0, 0.9 * 9 + 0.1 * 1],
        [0.25 * 4 + 0.75 * 0, 0.25 * 9 + 0.75 * 1],
        [0.8 * 16 + 0.2 * 0, 0.8 * 25 + 0.2 * 1],
        [0.6 * 16 + 0.4 * 0, 0.6 * 25 + 0.4 * 1],
        [0.4 * 16 + 0.6 * 0, 0.4 * 25 + 0.6 * 1],
    ])
    torch.testing.assert_close(mix_activations(h, lam, partners), expected)
    torch.testing.assert_close(mix_by_hand(h, lam, partners), expected)


@pytest.mark.parametrize("seed", range(6))
def test_hooks_equal_explicit_mixing_logits_and_gradients(seed):
    model = small_cnn().train()
    reference = small_cnn().train()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 3, 8, 8, generator=g)
    y = torch.randint(5, (6,), generator=g)
    with ManifoldMultiMix(model, ["", "1", "3"], k=4, alpha=2.0, generator=g) as mm:
        logits = model(x)
        record = mm.last
        loss = mixed_cross_entropy(logits, *mm.targets(y))
    assert logits.shape == (24, 5)
    assert record.layer in ("", "1", "3")
    assert (record.lambdas.diff(dim=1) >= 0).all()

    assert record.lambdas.shape == (6, 4) and sorted(record.partners.tolist()) == list(range(6))
    assert (record.partners != torch.arange(6)).any()
    expected = explicit_forward(reference, x, record.layer, record.lambdas, record.partners)
    torch.testing.assert_close(logits, expected)
    own, partner, w = y.repeat_interleave(4), y[record.partners].repeat_interleave(4), record.lambdas.reshape(-1)
    expected_loss = mixed_cross_entropy(expected, own, partner, w)
    torch.testing.assert_close(loss, expected_loss)
    loss.backward()
    expected_loss.backward()
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad)


def test_every_candidate_layer_gets_drawn():
    model = small_cnn().train()
    g = torch.Generator().manual_seed(0)
    seen = set()
    with ManifoldMultiMix(model, ["", "1", "3"], k=2, generator=g) as mm:
        for _ in range(40):
            model(torch.randn(4, 3, 8, 8))
            seen.add(mm.last.layer)
    assert seen == {"", "1", "3"}


def test_detaching_leaves_the_model_as_it_was():
    model = small_cnn().train()
    x = torch.randn(4, 3, 8, 8)
    before = model(x)
    with ManifoldMultiMix(model, ["1", "3"], k=3):
        assert model(x).shape[0] == 12
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    torch.testing.assert_close(model(x), before)


def test_eval_mode_is_untouched():
    model = small_cnn().eval()
    x = torch.randn(4, 3, 8, 8)
    before = model(x)
    y = torch.arange(4)
    with ManifoldMultiMix(model, ["", "1"], k=3) as mm:
        out = model(x)
        labels, partner, weights = mm.targets(y)
    torch.testing.assert_close(out, before)
    assert torch.equal(labels, y) and torch.equal(partner, y) and (weights == 0).all()


def test_channels_last_activations_stay_channels_last():
    h = torch.randn(3, 4, 5, 6).contiguous(memory_format=torch.channels_last)
    lam = torch.tensor([[0.2, 0.7]] * 3)
    mixed = mix_activations(h, lam, torch.tensor([2, 0, 1]))
    assert mixed.shape == (6, 4, 5, 6)
    assert mixed.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(mixed[1], 0.3 * h[0] + 0.7 * h[2])


def test_channels_last_model_matches_contiguous_model():
    model = small_cnn().train()
    x = torch.randn(4, 3, 8, 8)
    with ManifoldMultiMix(model, ["1"], k=2, generator=torch.Generator().manual_seed(1)) as mm:
        a = model(x)
    cl_model = small_cnn().train().to(memory_format=torch.channels_last)
    with ManifoldMultiMix(cl_model, ["1"], k=2, generator=torch.Generator().manual_seed(1)):
        b = cl_model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert mm.last.layer == "1"


@pytest.mark.parametrize("kwargs, match", [
    (dict(layers=["nope"]), r"`layers` names 'nope', which is not a module of the model"),
    (dict(layers=[]), r"`layers` must be a non-empty list"),
    (dict(layers="1"), r"`layers` must be a non-empty list"),
    (dict(layers=["1"], k=0), r"`k` must be an integer from 1 to 64; got 0"),
    (dict(layers=["1"], alpha=0), r"`alpha` must be > 0"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ManifoldMultiMix(small_cnn(), **kwargs)


def test_targets_need_matching_labels():
    model = small_cnn().train()
    with ManifoldMultiMix(model, ["1"], k=2) as mm:
        model(torch.randn(4, 3, 8, 8))
        with pytest.raises(ValueError, match=r"`labels` has 3 rows but the last forward mixed a batch of 4"):
            mm.targets(torch.arange(3))


def test_a_layer_that_never_runs_is_reported():
    class TwoPaths(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Linear(3, 3), nn.Linear(3, 3)

        def forward(self, x):
            return self.used(x)

    model = TwoPaths().train()
    with ManifoldMultiMix(model, ["unused"], k=2):
        with pytest.raises(RuntimeError, match=r"layer 'unused' was not called during the forward"):
            model(torch.randn(2, 3))
