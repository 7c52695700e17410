"""train/evidence.py: the gradient-variance estimator (paper Eq. 8, Prop. III.1 / III.2) and its
bootstrap, the large-batch mixup gradient (Eq. 9) against multi-mix with K=1, and a tiny run of
`python -m train.evidence variance --quick`."""
import json

import numpy as np
import pytest
import torch

from train import evidence
from train.evidence import Setting, Task, VarianceConfig, variance_stats
from train.models import SpiralMLP


def spiral_pool_task(seed: int = 0) -> Task:
    """An untrained spiral MLP at fixed weights and 2,000 spiral points (no training: fast)."""
    from train.spiral import make_spirals

    torch.manual_seed(seed)
    x, y = make_spirals(2000, seed=seed)
    return Task("spiral", evidence.freeze_batchnorm(SpiralMLP()), torch.from_numpy(x), torch.from_numpy(y),
                "", ["layer1", "layer2"], {"mixup": 2.0, "manifold": 2.0})


def test_variance_stats_basic_properties():
    g = torch.randn(60, 30) * 2 + 1
    st = variance_stats(g, resamples=500, seed=3)
    direct = ((g.double() - g.double().mean(0)) ** 2).sum(1).sum().item() / 59
    assert st["var"] == pytest.approx(direct, rel=1e-10)
    assert st["var"] >= 0 and (st["boot_var"] >= 0).all()
    lo, hi = st["var_ci"]
    assert lo <= st["var"] <= hi
    lo, hi = st["surrogate_ci"]
    assert lo <= st["surrogate"] <= hi
    # E||g||^2 = Var (biased, /N) + ||mean||^2
    assert st["surrogate"] == pytest.approx(st["var"] * 59 / 60 + st["mean_norm2"], rel=1e-9)


def test_bootstrap_reproducible_with_seed():
    g = torch.randn(40, 10)
    a, b = variance_stats(g, seed=7), variance_stats(g, seed=7)
    c = variance_stats(g, seed=8)
    assert a["var_ci"] == b["var_ci"] and np.array_equal(a["boot_var"], b["boot_var"])
    assert a["var_ci"] != c["var_ci"]
    assert a["var"] == c["var"]


def test_variance_of_mean_scales_as_one_over_n():
    """The estimator on a synthetic check: the mean of n i.i.d. N(0, I_P) vectors has variance
    P / n; the estimate (and its CI) must follow 1/n."""
    rng = np.random.default_rng(0)
    p, draws = 40, 400
    base = None
    for n in (1, 4, 16):
        g = rng.standard_normal((draws, n, p)).mean(1)
        st = variance_stats(g, resamples=300, seed=n)
        assert st["var_ci"][0] <= p / n <= st["var_ci"][1]
        if base is None:
            base = st["var"]
        else:
            assert st["var"] / base == pytest.approx(1 / n, rel=0.15)


def test_multimix_k1_batch_scope_equals_large_batch_mixup():
    """Multi-mix with K=1 and lambda_scope "batch" on K*B pairs is large-batch mixup (Eq. 9): with
    the same draws (same generator seed) the gradients are equal; the large-batch path is written
    out independently of multimix_batch."""
    task = spiral_pool_task()
    k, b = 5, 12
    for seed in range(3):
        g_mm = evidence.draw_gradients(task, Setting("mixup", 1, k * b), 2, seed)
        g_lb = evidence.draw_gradients(task, Setting("mixup", k, b, large_batch=True), 2, seed)
        torch.testing.assert_close(g_mm, g_lb, rtol=1e-5, atol=1e-6)
    # and K > 1 is a different estimator (same compute, different gradient)
    g_k = evidence.draw_gradients(task, Setting("mixup", k, b), 2, 0)
    assert not torch.allclose(g_k, evidence.draw_gradients(task, Setting("mixup", k, b, large_batch=True), 2, 0))


def test_draws_are_fresh_and_seeded():
    task = spiral_pool_task()
    s = Setting("manifold", 3, 8)
    a = evidence.draw_gradients(task, s, 4, 11)
    torch.testing.assert_close(a, evidence.draw_gradients(task, s, 4, 11))
    assert not torch.allclose(a[0], a[1])   # a fresh minibatch and fresh mixing every draw


def test_bad_input_raises_value_error():
    task = spiral_pool_task()
    with pytest.raises(ValueError):
        evidence.draw_gradients(task, Setting("cutmix", 2, 8), 4, 0)   # points have no H, W
    with pytest.raises(ValueError):
        evidence.draw_gradients(task, Setting("mixup", 2, 8), 1, 0)
    with pytest.raises(ValueError):
        evidence.draw_gradients(task, Setting("mixup", 9, 300, large_batch=True), 2, 0)  # > pool
    with pytest.raises(ValueError):
        evidence.draw_gradients(task, Setting("mixup", 2, 8, lambda_scope="row"), 2, 0)
    with pytest.raises(ValueError):
        variance_stats(torch.randn(1, 5))
    with pytest.raises(ValueError):
        variance_stats(torch.full((4, 3), float("nan")))


def test_crossing_and_fit():
    assert evidence.crossing([8, 16, 32], [2.0, 1.5, 1.2]) is None
    assert evidence.crossing([8, 16, 32], [0.9, 0.8, 0.7]) == 8
    assert 16 < evidence.crossing([8, 16, 32], [2.0, 1.5, 0.5]) < 32
    # Eq. 11 with known components is recovered exactly by the fit
    v, v1, v2, k = 100.0, 30.0, 0.5, 5
    rows = []
    for b in (8, 16, 32, 64, 128):
        rows.append((b, False, v / (k * b) + v1 * (1 - 1 / k) / b + v2 * (1 / k - 1 / (k * b))))
        rows.append((b, True, v / (k * b) + v2 * (1 - 1 / (k * b))))
    fit = evidence.fit_components(k, rows)
    assert fit["B0"] == pytest.approx(v1 / v2, rel=1e-6)


def test_tiny_run_writes_results(tmp_path):
    cfg = VarianceConfig(tasks=("spiral",), spiral_draws=30, ks=(1, 3), k_batch=8, k_compare=3,
                         batches={"spiral": (8, 32)}, modes={"spiral": ("mixup", "manifold")},
                         compare_modes={"spiral": ("mixup",)}, resamples=200)
    res = evidence.run_variance(cfg, tmp_path, progress=False, log=lambda s: None,
                                tasks={"spiral": spiral_pool_task()})
    data = json.loads((tmp_path / "variance.json").read_text())
    spiral = data["tasks"]["spiral"]
    rows = spiral["k_sweep"] + spiral["scope_sampling"] + spiral["prop_III_2"]["mixup"]["multimix"]
    assert len(spiral["k_sweep"]) == 4 and len(spiral["scope_sampling"]) == 4
    for r in rows:
        assert r["var"] >= 0 and r["var_ci"][0] <= r["var"] <= r["var_ci"][1]
    for name in ("variance_vs_k", "variance_vs_batch", "scope_sampling", "surrogate"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    assert "Prop. III.2" in (tmp_path / "variance.md").read_text()
    assert res["seconds"] > 0


def test_cli_quick(tmp_path):
    """`python -m train.evidence variance --quick` (with fewer draws here, for time)."""
    assert evidence.main(["variance", "--quick", "--draws", "20", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "variance_vs_k.png").exists()
