"""mixed_cross_entropy equals cross-entropy against the dense soft target, with gradients."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dali_multimix.torch import mixed_cross_entropy, mixed_soft_targets


def random_case(n=24, c=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(c, (n,), generator=g)
    partner = torch.randint(c, (n,), generator=g)
    weights = torch.rand(n, generator=g, dtype=torch.float64)
    return logits, labels, partner, weights


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("soft", [False, True])
def test_equals_soft_target_cross_entropy_with_gradients(smoothing, soft):
    logits, labels, partner, weights = random_case(seed=int(smoothing * 10) + soft)
    c = logits.shape[1]
    if soft:  # soft labels: arbitrary distributions
        g = torch.Generator().manual_seed(5)
        labels = torch.softmax(torch.randn(len(labels), c, generator=g, dtype=torch.float64), 1)
        partner = torch.softmax(torch.randn(len(labels), c, generator=g, dtype=torch.float64), 1)
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    loss = mixed_cross_entropy(a, labels, partner, weights, label_smoothing=smoothing)
    target = mixed_soft_targets(labels, partner, weights, c).double()
    expected = F.cross_entropy(b, target, label_smoothing=smoothing)
    assert abs(loss.item() - expected.item()) < 1e-6
    loss.backward()
    expected.backward()
    torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=0)


def test_smoothed_dense_targets_match_torch_one_hot_smoothing():
    """mixed_soft_targets with w = 0 reproduces torch's own label smoothing of class indices."""
    logits, labels, partner, _ = random_case()
    zero = torch.zeros(len(labels), dtype=torch.float64)
    target = mixed_soft_targets(labels, partner, zero, logits.shape[1], label_smoothing=0.2).double()
    torch.testing.assert_close(F.cross_entropy(logits, target),
                               F.cross_entropy(logits, labels, label_smoothing=0.2))


def test_weight_zero_and_one_select_each_label():
    logits, labels, partner, _ = random_case()
    n = len(labels)
    own = mixed_cross_entropy(logits, labels, partner, torch.zeros(n, dtype=torch.float64))
    other = mixed_cross_entropy(logits, labels, partner, torch.ones(n, dtype=torch.float64))
    torch.testing.assert_close(own, F.cross_entropy(logits, labels))
    torch.testing.assert_close(other, F.cross_entropy(logits, partner))


def test_labels_of_shape_n1_and_reductions():
    logits, labels, partner, weights = random_case()
    per_row = mixed_cross_entropy(logits, labels[:, None], partner[:, None], weights, reduction="none")
    assert per_row.shape == (len(labels),)
    torch.testing.assert_close(per_row.sum(),
                               mixed_cross_entropy(logits, labels, partner, weights, reduction="sum"))


@pytest.mark.parametrize("change, match", [
    (dict(weights=torch.zeros(5)), r"`weights` has 5 rows but `logits` has 24"),
    (dict(labels=torch.zeros(23, dtype=torch.long)), r"`labels` has 23 rows"),
    (dict(logits=torch.zeros(24)), r"`logits` must be \(N, C\)"),
    (dict(label_smoothing=1.5), r"`label_smoothing` must be in \[0, 1\]; got 1.5"),
    (dict(reduction="avg"), r"`reduction` must be 'mean', 'sum' or 'none'; got 'avg'"),
    (dict(labels=torch.zeros(24, 3), partner_labels=torch.zeros(24, 3)), r"soft `labels` must be \(N, C\)"),
])
def test_bad_arguments(change, match):
    logits, labels, partner, weights = random_case()
    args = dict(logits=logits, labels=labels, partner_labels=partner, weights=weights)
    args.update(change)
    with pytest.raises(ValueError, match=match):
        mixed_cross_entropy(**args)
