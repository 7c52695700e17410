"""multimix_batch on tensors equals the DALI operator fed the same draws; its own draws follow
the paper's distributions; bad input gets a clear error."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from conftest import given_parameters, overrides_for, run_multimix, to_layout
from dali_multimix import sampling
from dali_multimix.torch import multimix_batch


@pytest.mark.parametrize("mode", ["mixup", "cutmix", "fmix"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float16, np.float32])
@pytest.mark.parametrize("layout", ["HWC", "CHW"])
def test_equals_the_dali_operator(photos, mode, dtype, layout):
    rng = np.random.default_rng(17)
    batch, k, h, w = 5, 4, 64, 64
    images = to_layout(np.concatenate([photos, photos[:1, ::-1]]), layout)
    if dtype != np.uint8:
        images = (images / 255.0 - 0.5).astype(dtype)
    labels = np.arange(batch, dtype=np.int64)
    overrides = overrides_for(mode, *given_parameters(rng, batch, k, h, w))
    [(mixed, weights, partner_labels, got_partners)] = run_multimix(
        images, list(labels), layout=layout, k=k, mode=mode, arg_inputs=overrides)

    result = multimix_batch(torch.from_numpy(images), torch.from_numpy(labels), k=k, mode=mode,
                            layout=layout, **overrides)
    np.testing.assert_array_equal(result.images.numpy(), mixed)
    np.testing.assert_array_equal(result.weights.numpy(), weights)
    np.testing.assert_array_equal(result.partner_labels.numpy(), partner_labels)
    np.testing.assert_array_equal(result.partners.numpy(), got_partners)


def test_generator_makes_it_reproducible(photos):
    x = torch.from_numpy(photos)
    y = torch.arange(4)
    a = multimix_batch(x, y, k=3, mode="fmix", layout="HWC", generator=torch.Generator().manual_seed(1))
    b = multimix_batch(x, y, k=3, mode="fmix", layout="HWC", generator=torch.Generator().manual_seed(1))
    c = multimix_batch(x, y, k=3, mode="fmix", layout="HWC", generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.images, b.images) and torch.equal(a.weights, b.weights)
    assert not torch.equal(a.weights, c.weights)


@pytest.mark.parametrize("mode", ["cutmix", "fmix"])
def test_random_masks_are_nested_and_weights_are_their_area(mode):
    x = torch.stack([torch.full((1, 40, 48), 10.0 * (i + 1)) for i in range(6)])
    r = multimix_batch(x, torch.arange(6), k=5, mode=mode, layout="CHW",
                       generator=torch.Generator().manual_seed(3))
    for i in range(6):
        partner_value = x[r.partners[i], 0, 0, 0]
        if partner_value == x[i, 0, 0, 0]:
            continue
        taken = (r.images[i, :, 0] == partner_value)
        assert (taken[:-1] <= taken[1:]).all()
        torch.testing.assert_close(r.weights[i], taken.float().mean(dim=(1, 2)))


@pytest.mark.parametrize("how", ["sorted", "stratified"])
def test_sampled_lambdas_follow_the_distribution(how):
    alpha, k = 0.5, 4
    lam = sampling.sample_lambdas(4000, k, alpha, lambda_sampling=how, lambda_scope="sample",
                                  generator=torch.Generator().manual_seed(9)).double().numpy()
    assert (np.diff(lam, axis=1) >= 0).all()
    u = stats.beta(alpha, alpha).cdf(lam)
    for j in range(k):
        if how == "sorted":
            assert stats.kstest(u[:, j], stats.beta(j + 1, k - j).cdf).pvalue > 1e-3
        else:
            assert stats.kstest(np.clip(u[:, j] * k - j, 0, 1), "uniform").pvalue > 1e-3


def test_fmix_scores_are_low_frequency():
    scores = sampling.fmix_scores(4, 64, 64, generator=torch.Generator().manual_seed(0))
    top = scores > scores.flatten(1).median(dim=1).values[:, None, None]
    boundary = (top[:, :, 1:] != top[:, :, :-1]).float().mean()
    assert boundary < 0.1


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(k=0), ValueError, r"`k` must be an integer from 1 to 64; got 0"),
    (dict(alpha=-1.0), ValueError, r"`alpha` must be a finite number > 0; got -1.0"),
    (dict(mode="mix"), ValueError, r"`mode` must be one of"),
    (dict(mode="cutmix", layout="CH"), ValueError, r"needs `layout` naming the 3 sample dimensions"),
    (dict(lambdas=np.zeros((4, 2))), ValueError, r"`lambdas` must have shape \(4, 5\); got \(4, 2\)"),
    (dict(lambdas=np.full((4, 5), 2.0)), ValueError, r"`lambdas` must lie in \[0, 1\]"),
    (dict(partners=[0, 1, 2, 4]), ValueError, r"`partners` must be indices in \[0, 4\)"),
    (dict(lambda_scope="rows"), ValueError,
     r"`lambda_scope`: expected one of \('batch', 'sample'\); got 'rows'"),
])
def test_bad_arguments(photos, kwargs, error, match):
    x = torch.from_numpy(to_layout(photos, "CHW"))
    with pytest.raises(error, match=match):
        multimix_batch(x, torch.arange(4), **kwargs)


def test_bad_tensors():
    with pytest.raises(TypeError, match=r"`x` must be uint8, float16 or float32; got torch.int64"):
        multimix_batch(torch.zeros(2, 3, dtype=torch.long), torch.arange(2))
    with pytest.raises(ValueError, match=r"`labels` must have one entry per sample \(2\); got 3"):
        multimix_batch(torch.zeros(2, 3), torch.arange(3))


@pytest.mark.gpu
def test_cuda_tensors_match_cpu(photos):
    x = torch.from_numpy(to_layout(photos, "CHW"))
    for mode in ("mixup", "cutmix", "fmix"):
        cpu = multimix_batch(x, torch.arange(4), k=3, mode=mode, generator=torch.Generator().manual_seed(4))
        gpu = multimix_batch(x.cuda(), torch.arange(4).cuda(), k=3, mode=mode,
                             generator=torch.Generator().manual_seed(4))
        assert gpu.images.is_cuda
        torch.testing.assert_close(gpu.images.cpu(), cpu.images, atol=0, rtol=0)
