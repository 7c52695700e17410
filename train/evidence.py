"""Measured evidence for the multi-mix paper's variance claims (Shen et al., "Mixup Augmentation
with Multiple Interpolations", Sec. III-B, Prop. III.1 and III.2).

The paper only compares the surrogate E||g||^2 (Fig. 8). Here the variance itself is measured: at
fixed weights, N independent minibatch gradients are drawn per setting (a fresh minibatch and fresh
mixing every draw, the same weights), and Var[g] = E||g - E g||^2 is estimated with a seeded
percentile-bootstrap confidence interval. Settings:

* K in {1, 2, 3, 5, 7, 9} at a fixed B (Prop. III.1: Var decreases with K), for input mixup, cutmix,
  fmix (``multimix_batch``, the DALI operator's semantics) and manifold mixup (``ManifoldMultiMix``);
* multi-mix (B pairs, K ratios: K*B rows) against large-batch mixup (K*B pairs, one ratio: the
  paper's Eq. 9) at equal compute over B (Prop. III.2: multi-mix is smaller once B >= B0);
* ``lambda_scope`` "batch" vs "sample" and ``lambda_sampling`` "sorted" vs "stratified";
* the surrogate E||g||^2 next to every variance (E||g||^2 = Var + ||E g||^2).

Two fixed-weight models: the small CNN of the main job trained briefly on Fashion-MNIST (Debian's
``dataset-fashion-mnist``) and the spiral MLP of ``train/spiral.py`` (paper Sec. IV-A).

    python -m train.evidence variance [--quick] [--out docs/evidence] [--draws 200] [--seed 0]

``--quick`` (under a minute): the spiral MLP only, fewer batch sizes; the main job (``make demo``)
shows its figure.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dali_multimix import sampling
from dali_multimix.torch import ManifoldMultiMix, mixed_cross_entropy, multimix_batch

INPUT_MODES = ("mixup", "cutmix", "fmix")
MODES = INPUT_MODES + ("manifold",)


# ------------------------------------------------------------------------------------------------
# the variance estimator and its bootstrap
# ------------------------------------------------------------------------------------------------
def bootstrap_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) multinomial counts of a seeded nonparametric bootstrap of n draws."""
    if n < 2 or resamples < 1:
        raise ValueError(f"bootstrap_counts: need n >= 2 draws and resamples >= 1; got n={n}, "
                         f"resamples={resamples}")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)


def variance_stats(grads: torch.Tensor | np.ndarray, *, resamples: int = 1000, seed: int = 0,
                   level: float = 0.95) -> dict:
    """Var[g] = E||g - E g||^2 of N gradient draws (rows of `grads`, (N, P)), the quantity of the
    paper's Eq. 8, with the unbiased (N - 1) estimator; the surrogate E||g||^2 (paper Fig. 8) and
    ||mean g||^2 beside it; percentile-bootstrap CIs (seeded, reproducible).

    Only the N x N Gram matrix is resampled: for counts c, sum_i c_i ||g_i||^2 and
    ||sum_i c_i g_i||^2 = c^T G c give the resampled variance exactly.

    Returns a dict with var, var_ci (lo, hi), surrogate, surrogate_ci, mean_norm2, n, and
    `boot_var` (the resampled variances, for ratios of independent settings).
    """
    g = torch.as_tensor(np.asarray(grads) if not isinstance(grads, torch.Tensor) else grads)
    if g.dim() != 2 or g.shape[0] < 2:
        raise ValueError(f"variance_stats: expected (N >= 2, P) gradient draws; got {tuple(g.shape)}")
    if not 0 < level < 1:
        raise ValueError(f"variance_stats: level must be in (0, 1); got {level}")
    if not torch.isfinite(g).all():
        raise ValueError("variance_stats: gradient draws contain NaN or inf")
    g = g.double()
    n = g.shape[0]
    # centre first (numerically safer); the variance is shift-invariant, the Gram of centred rows
    # gives the variance, the squared norms of the raw rows give the surrogate
    mean = g.mean(0)
    centred = g - mean
    gram = (centred @ centred.T).numpy()
    sq_raw = (g * g).sum(1).numpy()
    sq = np.diag(gram).copy()
    var = float(sq.sum() / (n - 1))
    counts = bootstrap_counts(n, resamples, seed)
    quad = np.einsum("bi,ij,bj->b", counts, gram, counts, optimize=True)
    boot_var = np.maximum((counts @ sq - quad / n) / (n - 1), 0.0)
    boot_sur = counts @ sq_raw / n
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    return {"var": var, "var_ci": [float(v) for v in np.percentile(boot_var, q)],
            "surrogate": float(sq_raw.mean()), "surrogate_ci": [float(v) for v in np.percentile(boot_sur, q)],
            "mean_norm2": float(mean.pow(2).sum()), "n": n, "boot_var": boot_var}


def ratio_ci(a: dict, b: dict, level: float = 0.95) -> tuple[float, float, float]:
    """Var_a / Var_b with a percentile CI from the two settings' independent bootstrap resamples."""
    r = a["boot_var"] / np.maximum(b["boot_var"], 1e-300)
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    lo, hi = np.percentile(r, q)
    return a["var"] / b["var"], float(lo), float(hi)


# ------------------------------------------------------------------------------------------------
# tasks (fixed weights + a pool of data) and one gradient draw
# ------------------------------------------------------------------------------------------------
@dataclass
class Task:
    """A model at fixed weights and the data pool that minibatches are drawn from."""

    name: str
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    layout: str                  # sample layout for cutmix / fmix ("CHW"; "" for points)
    manifold_layers: list
    alpha: dict                  # mode -> Beta(alpha, alpha)
    description: str = ""


@dataclass(frozen=True)
class Setting:
    """One gradient estimator: `k` interpolations of `batch` pairs (multi-mix, Eq. 7), or with
    large_batch=True large-batch mixup (Eq. 9): k*batch pairs, one ratio for the whole batch."""

    mode: str = "mixup"
    k: int = 5
    batch: int = 16
    lambda_scope: str = "batch"
    lambda_sampling: str = "sorted"
    large_batch: bool = False

    def rows(self) -> int:
        """Gradient computations (rows through the network) per draw: K*B for both estimators."""
        return self.k * self.batch

    def label(self) -> str:
        if self.large_batch:
            return f"{self.mode} large-batch (K*B={self.rows()} pairs, one ratio)"
        return f"{self.mode} K={self.k} B={self.batch} {self.lambda_scope}/{self.lambda_sampling}"


def check_setting(task: Task, s: Setting) -> None:
    """ValueError for a setting the task cannot run."""
    if s.mode not in MODES:
        raise ValueError(f"Setting.mode must be one of {MODES}; got {s.mode!r}")
    if s.mode in ("cutmix", "fmix") and not task.layout:
        raise ValueError(f"mode {s.mode!r} needs images; task {task.name!r} has points")
    if s.k < 1 or s.batch < 2:
        raise ValueError(f"Setting needs k >= 1 and batch >= 2; got k={s.k}, batch={s.batch}")
    pairs = s.k * s.batch if s.large_batch else s.batch
    if pairs > len(task.y):
        raise ValueError(f"Setting draws {pairs} samples but task {task.name!r} has {len(task.y)}")
    sampling.check_lambda_scope(s.lambda_scope)
    if s.lambda_sampling not in sampling.LAMBDA_SAMPLINGS:
        raise ValueError(f"lambda_sampling must be one of {sampling.LAMBDA_SAMPLINGS}; got "
                         f"{s.lambda_sampling!r}")


def freeze_batchnorm(model: nn.Module) -> nn.Module:
    """Training mode (manifold hooks mix only then) with batch norm on its running statistics, so
    that a draw's gradient is the mean of its rows' gradients, as in the paper's Eq. 7 and 9."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    return model


def _flat_grad(model: nn.Module, loss: torch.Tensor) -> torch.Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params)
    return torch.cat([g.reshape(-1) for g in grads])


def large_batch_mixup_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lam: float,
                           partners: torch.Tensor) -> torch.Tensor:
    """Large-batch input mixup written out from the paper's Eq. 9: one ratio `lam` for all pairs
    (x_i, x_partners[i]) of the batch; loss (1 - lam) CE(y) + lam CE(y'), the mean over the batch.
    Kept independent of ``multimix_batch`` so that the K=1 equivalence can be tested."""
    mixed = (1.0 - lam) * x + lam * x.index_select(0, partners)
    logits = model(mixed)
    return (1.0 - lam) * F.cross_entropy(logits, y) + lam * F.cross_entropy(logits, y.index_select(0, partners))


def draw_gradient(task: Task, s: Setting, gen: torch.Generator) -> torch.Tensor:
    """One stochastic gradient (P,) at the task's fixed weights: a fresh minibatch (without
    replacement from the pool) and fresh mixing from `gen`. Multi-mix: the paper's Eq. 7 (B pairs,
    K ratios, mean over the K*B rows); large-batch mixup: Eq. 9 (K*B pairs, one ratio)."""
    model = task.model
    alpha = task.alpha[s.mode]
    n = s.k * s.batch if s.large_batch else s.batch
    idx = torch.randperm(len(task.y), generator=gen)[:n]
    x, y = task.x.index_select(0, idx), task.y.index_select(0, idx)
    if s.large_batch and s.mode == "mixup":
        # the same draw order as multimix_batch (ratios, then partners): equal draws, equal gradient
        lam = float(sampling.sample_lambdas(n, 1, alpha, lambda_scope="batch", generator=gen)[0, 0])
        partners = sampling.sample_partners(n, generator=gen)
        return _flat_grad(model, large_batch_mixup_loss(model, x, y, lam, partners))
    k = 1 if s.large_batch else s.k
    scope = "batch" if s.large_batch else s.lambda_scope
    if s.mode == "manifold":
        hooks = ManifoldMultiMix(model, task.manifold_layers, k=k, alpha=alpha, generator=gen,
                                 lambda_scope=scope, lambda_sampling=s.lambda_sampling)
        with hooks:
            logits = model(x)
            loss = mixed_cross_entropy(logits, *hooks.targets(y))
        return _flat_grad(model, loss)
    res = multimix_batch(x, y, k=k, alpha=alpha, mode=s.mode, layout=task.layout or "C",
                         lambda_sampling=s.lambda_sampling, lambda_scope=scope, generator=gen)
    rows = res.images.flatten(0, 1)
    loss = mixed_cross_entropy(model(rows), y.repeat_interleave(k), res.partner_labels.repeat_interleave(k),
                               res.weights.reshape(-1))
    return _flat_grad(model, loss)


def draw_gradients(task: Task, s: Setting, draws: int, seed: int,
                   bar: Optional[Callable[[int], None]] = None) -> torch.Tensor:
    """(draws, P) independent gradients of setting `s`, from a generator seeded with `seed`."""
    check_setting(task, s)
    if draws < 2:
        raise ValueError(f"draws must be >= 2; got {draws}")
    gen = torch.Generator().manual_seed(seed)
    out = None
    for i in range(draws):
        g = draw_gradient(task, s, gen).detach()
        if out is None:
            out = torch.empty(draws, g.numel(), dtype=torch.float32)
        out[i] = g
        if bar is not None:
            bar(1)
    return out


# ------------------------------------------------------------------------------------------------
# the two fixed-weight models
# ------------------------------------------------------------------------------------------------
def fashion_mnist_task(train_images: int = 12000, epochs: int = 2, seed: int = 0,
                       log: Callable[[str], None] = print) -> Task:
    """The main job's small CNN trained briefly (plain cross-entropy, SGD) on Fashion-MNIST
    (``pipelines.datasets.fashion_mnist()``, the Debian package); the pool is all 60,000 training
    images, normalised with the training set's mean and std."""
    from pipelines.datasets import fashion_mnist

    from .models import SmallCNN

    train, test = fashion_mnist("train"), fashion_mnist("test")
    x = torch.from_numpy(np.array(train.images)).permute(0, 3, 1, 2).float().div_(255)
    mean, std = x.mean().item(), x.std().item()
    x = (x - mean) / std
    y = torch.from_numpy(np.array(train.labels)).long()
    xt = (torch.from_numpy(np.array(test.images[:2000])).permute(0, 3, 1, 2).float().div_(255) - mean) / std
    yt = torch.from_numpy(np.array(test.labels[:2000])).long()
    torch.manual_seed(seed)
    model = SmallCNN(10, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=g)[:train_images]
        for start in range(0, train_images, 100):
            i = order[start:start + 100]
            loss = F.cross_entropy(model(x[i]), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(xt).argmax(1) == yt).double().mean().item()
    log(f"fashion-mnist small_cnn: {epochs} epochs over {train_images} images, test accuracy "
        f"{100 * acc:.1f}% (2,000 test images)")
    for p in model.parameters():
        p.requires_grad_(True)
    return Task("fashion_mnist", freeze_batchnorm(model), x, y, "CHW", ["", "layer1", "layer2"],
                {"mixup": 1.0, "cutmix": 1.0, "fmix": 1.0, "manifold": 2.0},
                f"SmallCNN ({sum(p.numel() for p in model.parameters())} parameters), {epochs} epochs "
                f"of SGD on {train_images} Fashion-MNIST images, test acc {100 * acc:.1f}%; pool: "
                f"60,000 training images")


def spiral_task(epochs: int = 500, pool: int = 20000, seed: int = 0,
                log: Callable[[str], None] = print) -> Task:
    """The spiral MLP (8 x 6 units, paper Sec. IV-A) trained briefly without mixing on seed 0's
    split of ``train/spiral.py``; the pool is `pool` fresh points of the same distribution with
    20% of the labels flipped (large-batch mixup needs up to K*B distinct points)."""
    from .spiral import accuracy, fit, make_spirals, split

    x, y = make_spirals()
    train, test = split(x, y, seed)
    model = fit(train, None, seed, epochs)
    acc = accuracy(model, test)
    log(f"spiral MLP: {epochs} epochs without mixing, test accuracy {100 * acc:.1f}%")
    px, py = make_spirals(pool, seed=1000 + seed)
    rng = np.random.default_rng([seed, 7])
    flip = rng.choice(len(py), int(0.2 * len(py)), replace=False)
    py[flip] = 1 - py[flip]
    return Task("spiral", freeze_batchnorm(model), torch.from_numpy(px), torch.from_numpy(py), "",
                ["layer1", "layer2"], {"mixup": 2.0, "manifold": 2.0},
                f"SpiralMLP (8x6, {sum(p.numel() for p in model.parameters())} parameters), {epochs} "
                f"epochs without mixing, test acc {100 * acc:.1f}%; pool: {pool} fresh spiral points, "
                f"20% labels flipped")


# ------------------------------------------------------------------------------------------------
# the experiment
# ------------------------------------------------------------------------------------------------
@dataclass
class VarianceConfig:
    """What `variance` measures. The defaults are the full run (<= 15 min on 2 CPU cores)."""

    draws: int = 200
    spiral_draws: int = 1000                # the spiral MLP is cheap: more draws, tighter CIs
    ks: tuple = (1, 2, 3, 5, 7, 9)
    k_batch: int = 16                       # B of the K sweep and of the scope / sampling comparison
    k_compare: int = 5                      # K of multi-mix vs large-batch mixup and of scope/sampling
    batches: dict = field(default_factory=lambda: {"fashion_mnist": (8, 16, 32, 64),
                                                   "spiral": (8, 16, 32, 64, 128, 256)})
    modes: dict = field(default_factory=lambda: {"fashion_mnist": ("mixup", "cutmix", "fmix", "manifold"),
                                                 "spiral": ("mixup", "manifold")})
    compare_modes: dict = field(default_factory=lambda: {"fashion_mnist": ("mixup",),
                                                         "spiral": ("mixup", "manifold")})
    tasks: tuple = ("spiral", "fashion_mnist")
    resamples: int = 1000
    seed: int = 0
    fmnist_images: int = 12000
    fmnist_epochs: int = 2
    spiral_epochs: int = 500
    threads: int = 2

    @staticmethod
    def quick() -> "VarianceConfig":
        """Under a minute: the spiral MLP only, B in {8, 32, 128}."""
        return VarianceConfig(tasks=("spiral",), batches={"spiral": (8, 32, 128)}, spiral_draws=400,
                              compare_modes={"spiral": ("mixup",)}, spiral_epochs=300, threads=1)


def plan(cfg: VarianceConfig, task: str) -> list:
    """The settings of one task: (group, Setting) pairs, duplicates removed (kept once)."""
    out, seen = [], set()

    def add(group, s):
        key = (group, s)
        if key not in seen:
            seen.add(key)
            out.append((group, s))

    for mode in cfg.modes[task]:
        for k in cfg.ks:
            add("k_sweep", Setting(mode, k, cfg.k_batch))
    for mode in cfg.compare_modes[task]:
        for b in cfg.batches[task]:
            add("b_sweep", Setting(mode, cfg.k_compare, b))
            add("b_sweep", Setting(mode, cfg.k_compare, b, large_batch=True))
    for scope in sampling.LAMBDA_SCOPES:
        for samp in sampling.LAMBDA_SAMPLINGS:
            add("scope_sampling", Setting("mixup", cfg.k_compare, cfg.k_batch, scope, samp))
    return out


def fit_components(k: int, rows: list) -> Optional[dict]:
    """Least-squares fit (relative errors, non-negative) of the paper's Eq. 11 and its large-batch
    form (Appendix B) to measured variances: V = Var[g(pair, lambda)], V1 = Var over pairs of
    E_lambda g, V2 = Var over lambda of E_pairs g;
    multi-mix: Var = V/(KB) + V1 (1 - 1/K)/B + V2 (1/K - 1/(KB));
    large-batch: Var = V/(KB) + V2 (1 - 1/(KB)).  B0 = V1 / V2 (Prop. III.2).
    rows: (batch, large_batch, var). None when the fit is degenerate."""
    from scipy.optimize import nnls

    a, b = [], []
    for batch, large, var in rows:
        if large:
            a.append([1 / (k * batch), 0.0, 1 - 1 / (k * batch)])
        else:
            a.append([1 / (k * batch), (1 - 1 / k) / batch, 1 / k - 1 / (k * batch)])
        b.append(var)
    a, b = np.array(a), np.array(b)
    w = 1 / b
    coef, _ = nnls(a * w[:, None], b * w)
    v, v1, v2 = (float(c) for c in coef)
    if v2 <= 0:
        return {"V": v, "V1": v1, "V2": v2, "B0": math.inf}
    return {"V": v, "V1": v1, "V2": v2, "B0": v1 / v2}


def crossing(bs: Sequence[int], ratios: Sequence[float]) -> Optional[float]:
    """The batch size where Var_multimix / Var_large_batch first falls to 1, interpolated
    linearly in log2 B between grid points; the first B if it starts below 1; None if never."""
    if ratios[0] <= 1:
        return float(bs[0])
    for (b0, r0), (b1, r1) in zip(zip(bs, ratios), zip(bs[1:], ratios[1:])):
        if r0 > 1 >= r1:
            t = (r0 - 1) / (r0 - r1)
            return float(2 ** (math.log2(b0) + t * (math.log2(b1) - math.log2(b0))))
    return None


def _spearman(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic) if len(a) > 2 else float("nan")


def run_variance(cfg: VarianceConfig, out: Path, progress: Optional[bool] = None,
                 log: Callable[[str], None] = print, tasks: Optional[dict] = None) -> dict:
    """Measures every setting of `cfg`, writes variance.json, variance.md and the PNG plots into
    `out`, returns the results. `tasks` (name -> Task) skips building the models (tests)."""
    from tqdm import tqdm

    if cfg.draws < 2:
        raise ValueError(f"draws must be >= 2; got {cfg.draws}")
    unknown = [t for t in cfg.tasks if t not in ("spiral", "fashion_mnist")]
    if unknown:
        raise ValueError(f"unknown tasks {unknown}; known: spiral, fashion_mnist")
    progress = sys.stderr.isatty() if progress is None else progress
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
               "tasks": {}}
    for t_index, name in enumerate(cfg.tasks):
        t0 = time.perf_counter()
        draws = cfg.spiral_draws if name == "spiral" else cfg.draws
        torch.set_num_threads(1 if name == "spiral" else cfg.threads)  # tiny MLP: threads only cost
        if tasks and name in tasks:
            task = tasks[name]
        elif name == "spiral":
            task = spiral_task(cfg.spiral_epochs, seed=cfg.seed, log=log)
        else:
            task = fashion_mnist_task(cfg.fmnist_images, cfg.fmnist_epochs, seed=cfg.seed, log=log)
        settings = plan(cfg, name)
        unique = list(dict.fromkeys(s for _, s in settings))
        stats = {}
        with tqdm(total=len(unique) * draws, desc=f"variance {name}", disable=not progress,
                  unit="draw") as bar:
            for i, s in enumerate(unique):
                seed = cfg.seed * 1_000_003 + t_index * 10_007 + i
                g = draw_gradients(task, s, draws, seed, bar.update)
                stats[s] = variance_stats(g, resamples=cfg.resamples, seed=seed)
                del g
        if not progress:  # a log file gets one line per task instead of a bar
            log(f"{name}: {len(unique)} settings x {draws} draws in {time.perf_counter() - t0:.0f}s")
        results["tasks"][name] = summarise(cfg, name, task, settings, stats, time.perf_counter() - t0)
        results["tasks"][name]["draws"] = draws
    results["seconds"] = time.perf_counter() - started
    results["machine"] = (f"CPU, {cfg.threads} torch threads (1 for the spiral MLP), "
                          f"{os.cpu_count()} cores")
    (out / "variance.json").write_text(json.dumps(results, indent=1))
    (out / "variance.md").write_text(markdown(results))
    plot_variance(results, out)
    return results


def _row(s: Setting, st: dict) -> dict:
    return {"mode": s.mode, "k": s.k, "batch": s.batch, "rows": s.rows(), "lambda_scope": s.lambda_scope,
            "lambda_sampling": s.lambda_sampling, "large_batch": s.large_batch,
            **{k: v for k, v in st.items() if k != "boot_var"}}


def summarise(cfg: VarianceConfig, name: str, task: Task, settings: list, stats: dict,
              seconds: float) -> dict:
    """The task's results: the three groups, the Prop. III.1 / III.2 verdicts and the surrogate."""
    res = {"description": task.description, "seconds": seconds, "alpha": task.alpha,
           "manifold_layers": task.manifold_layers}
    res["k_sweep"] = [_row(s, stats[s]) for g, s in settings if g == "k_sweep"]
    res["scope_sampling"] = [_row(s, stats[s]) for g, s in settings if g == "scope_sampling"]
    # Prop. III.1: is Var(K) below Var(K=1), and is it monotone within the CIs?
    verdict = {}
    for mode in cfg.modes[name]:
        sweep = [(s, stats[s]) for g, s in settings if g == "k_sweep" and s.mode == mode]
        base = sweep[0][1]
        ratios = {s.k: ratio_ci(st, base) for s, st in sweep}
        decreasing = all(b[1]["var"] <= a[1]["var"] for a, b in zip(sweep, sweep[1:]))
        verdict[mode] = {"ratio_to_k1": {str(k): list(v) for k, v in ratios.items()},
                         "monotone_decreasing_point_estimates": decreasing,
                         "spearman_k_var": _spearman([s.k for s, _ in sweep], [st["var"] for _, st in sweep])}
    res["prop_III_1"] = verdict
    # Prop. III.2: multi-mix vs large-batch mixup at equal compute
    comp = {}
    for mode in cfg.compare_modes[name]:
        bs = list(cfg.batches[name])
        mm = [stats[Setting(mode, cfg.k_compare, b)] for b in bs]
        lb = [stats[Setting(mode, cfg.k_compare, b, large_batch=True)] for b in bs]
        ratios = [ratio_ci(a, b) for a, b in zip(mm, lb)]
        significant = [b for b, r in zip(bs, ratios) if r[2] < 1]
        fit = fit_components(cfg.k_compare, [(b, False, a["var"]) for b, a in zip(bs, mm)]
                             + [(b, True, a["var"]) for b, a in zip(bs, lb)])
        comp[mode] = {"k": cfg.k_compare, "batches": bs,
                      "multimix": [_row(Setting(mode, cfg.k_compare, b), a) for b, a in zip(bs, mm)],
                      "large_batch": [_row(Setting(mode, cfg.k_compare, b, large_batch=True), a)
                                      for b, a in zip(bs, lb)],
                      "ratio": [list(r) for r in ratios],
                      "b0_crossing": crossing(bs, [r[0] for r in ratios]),
                      "first_b_significantly_smaller": significant[0] if significant else None,
                      "fit": fit}
    res["prop_III_2"] = comp
    every = [stats[s] for s in dict.fromkeys(s for _, s in settings)]
    by_mode = {}
    for mode in cfg.modes[name]:
        pts = [stats[s] for s in dict.fromkeys(s for _, s in settings) if s.mode == mode]
        by_mode[mode] = {"spearman_var_surrogate": _spearman([p["var"] for p in pts], [p["surrogate"] for p in pts]),
                         "mean_norm2_over_var_range": [min(p["mean_norm2"] / p["var"] for p in pts),
                                                       max(p["mean_norm2"] / p["var"] for p in pts)]}
    res["surrogate"] = {"spearman_all": _spearman([p["var"] for p in every], [p["surrogate"] for p in every]),
                        "by_mode": by_mode}
    return res


# ------------------------------------------------------------------------------------------------
# reporting
# ------------------------------------------------------------------------------------------------
def _ci(st: dict, key: str = "var") -> str:
    lo, hi = st[f"{key}_ci"]
    return f"{st[key]:.4g} [{lo:.4g}, {hi:.4g}]"


def markdown(results: dict) -> str:
    """The results as markdown tables (the README's "Gradient variance" subsection quotes them)."""
    cfg = results["config"]
    lines = ["Gradient variance at fixed weights, Var = E||g - E g||^2 over N = "
             + ", ".join(f"{r['draws']} ({n})" for n, r in results["tasks"].items()) + " "
             f"independent minibatch gradients per setting (fresh minibatch and fresh mixing each "
             f"draw); 95% percentile-bootstrap CIs ({cfg['resamples']} resamples, seeded). "
             f"E||g||^2 is the paper's surrogate (Fig. 8). Runtime {results['seconds']:.0f} s "
             f"({results['machine']}), seed {cfg['seed']}.", ""]
    for name, res in results["tasks"].items():
        lines += [f"### {name}: {res['description']}", "",
                  f"alpha: {res['alpha']}; manifold layers {res['manifold_layers']} (one drawn per batch)", "",
                  f"**Prop. III.1** (K sweep, B={cfg['k_batch']}, lambda_scope batch, sorted):", "",
                  "| mode | K | rows | Var [95% CI] | Var / Var(K=1) [95% CI] | E\\|\\|g\\|\\|^2 [95% CI] |",
                  "|---|---|---|---|---|---|"]
        for r in res["k_sweep"]:
            ratio = res["prop_III_1"][r["mode"]]["ratio_to_k1"][str(r["k"])]
            lines.append(f"| {r['mode']} | {r['k']} | {r['rows']} | {_ci(r)} | {ratio[0]:.3f} "
                         f"[{ratio[1]:.3f}, {ratio[2]:.3f}] | {_ci(r, 'surrogate')} |")
        lines.append("")
        for mode, v in res["prop_III_1"].items():
            r9 = v["ratio_to_k1"][str(max(int(k) for k in v["ratio_to_k1"]))]
            lines.append(f"- {mode}: Var(K={max(int(k) for k in v['ratio_to_k1'])}) / Var(K=1) = "
                         f"{r9[0]:.3f} [{r9[1]:.3f}, {r9[2]:.3f}]; point estimates monotone decreasing: "
                         f"{'yes' if v['monotone_decreasing_point_estimates'] else 'no'} "
                         f"(Spearman K vs Var {v['spearman_k_var']:.2f})")
        lines.append("")
        for mode, c in res["prop_III_2"].items():
            lines += [f"**Prop. III.2** ({mode}): multi-mix (B pairs, K={c['k']}: K*B rows) vs large-batch "
                      f"mixup (K*B pairs, one ratio per batch) at equal compute:", "",
                      "| B | rows | multi-mix Var [95% CI] | large-batch Var [95% CI] | ratio multi-mix / large-batch [95% CI] |",
                      "|---|---|---|---|---|"]
            for b, m, l, r in zip(c["batches"], c["multimix"], c["large_batch"], c["ratio"]):
                lines.append(f"| {b} | {m['rows']} | {_ci(m)} | {_ci(l)} | {r[0]:.3f} [{r[1]:.3f}, {r[2]:.3f}] |")
            fit = c["fit"]
            x = c["b0_crossing"]
            lines += ["", f"- B0 where the ratio crosses 1 (interpolated): "
                          f"{'none in B = %d..%d' % (c['batches'][0], c['batches'][-1]) if x is None else '%.0f' % x}; "
                          f"first B with the ratio's CI below 1: {c['first_b_significantly_smaller'] or 'none'}",
                      f"- Eq. 11 fitted to these points: V = {fit['V']:.4g}, V1 = {fit['V1']:.4g}, "
                      f"V2 = {fit['V2']:.4g}, B0 = V1/V2 = {fit['B0']:.3g}" if fit else "- fit: degenerate", ""]
        lines += [f"**lambda_scope / lambda_sampling** (mixup, K={cfg['k_compare']}, B={cfg['k_batch']}):", "",
                  "| lambda_scope | lambda_sampling | Var [95% CI] | E\\|\\|g\\|\\|^2 [95% CI] |", "|---|---|---|---|"]
        for r in res["scope_sampling"]:
            lines.append(f"| {r['lambda_scope']} | {r['lambda_sampling']} | {_ci(r)} | {_ci(r, 'surrogate')} |")
        s = res["surrogate"]
        lines += ["", f"**Surrogate**: Spearman(Var, E||g||^2) over all settings {s['spearman_all']:.2f}; "
                      "per mode: " + "; ".join(
                          f"{m} {v['spearman_var_surrogate']:.2f} (||E g||^2 / Var from "
                          f"{v['mean_norm2_over_var_range'][0]:.2g} to {v['mean_norm2_over_var_range'][1]:.2g})"
                          for m, v in s["by_mode"].items()),
                  f"Task time {res['seconds']:.0f} s.", ""]
    return "\n".join(lines) + "\n"


def plot_variance(results: dict, out: Path) -> list:
    """variance_vs_k.png, variance_vs_batch.png, scope_sampling.png, surrogate.png in `out`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["tasks"])
    cfg = results["config"]
    paths = []

    def save(fig, title: str, name: str) -> Path:
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        return out / name

    def err(rows):
        v = np.array([r["var"] for r in rows])
        ci = np.array([r["var_ci"] for r in rows])
        return v, np.stack([v - ci[:, 0], ci[:, 1] - v])

    fig, axes = plt.subplots(1, len(names), figsize=(max(5.2 * len(names), 7.5), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        res = results["tasks"][name]
        for mode in res["prop_III_1"]:
            rows = [r for r in res["k_sweep"] if r["mode"] == mode]
            v, e = err(rows)
            ax.errorbar([r["k"] for r in rows], v, yerr=e, marker="o", capsize=3, label=mode)
        ax.set(yscale="log", xlabel="K (interpolations per pair)", ylabel="Var[g] = E||g - Eg||²",
               title=f"{name}: variance vs K (B={cfg['k_batch']}, N={res['draws']})")
        ax.set_xticks(cfg["ks"])
        ax.legend(fontsize=8)
    paths.append(save(fig, "Prop. III.1: gradient variance vs K at fixed weights (95% bootstrap CI)", "variance_vs_k.png"))

    panels = [(name, mode) for name in names for mode in results["tasks"][name]["prop_III_2"]]
    fig, axes = plt.subplots(1, len(panels), figsize=(max(5.2 * len(panels), 7.5), 4), squeeze=False)
    for ax, (name, mode) in zip(axes[0], panels):
        c = results["tasks"][name]["prop_III_2"][mode]
        bs = np.array(c["batches"])
        for key, label in (("multimix", f"multi-mix (B pairs x K={c['k']})"),
                           ("large_batch", f"large-batch mixup ({c['k']}B pairs, one ratio)")):
            v, e = err(c[key])
            ax.errorbar(bs, v, yerr=e, marker="o", capsize=3, label=label)
        fit = c["fit"]
        if fit:
            grid = np.geomspace(bs[0], bs[-1], 50)
            k = c["k"]
            ax.plot(grid, fit["V"] / (k * grid) + fit["V1"] * (1 - 1 / k) / grid + fit["V2"] * (1 / k - 1 / (k * grid)),
                    "C0--", lw=1, label="Eq. 11 fit")
            ax.plot(grid, fit["V"] / (k * grid) + fit["V2"] * (1 - 1 / (k * grid)), "C1--", lw=1)
        x = c["b0_crossing"]
        if x is not None:
            ax.axvline(x, color="k", ls=":", lw=1, label=f"crossing B0 ~ {x:.0f}")
        ax.set(xscale="log", yscale="log", xlabel="B (sample pairs of multi-mix)", ylabel="Var[g]",
               title=f"{name}, {mode}: equal compute ({c['k']}B rows)")
        ax.set_xticks(bs)
        ax.set_xticklabels([str(b) for b in bs])
        ax.minorticks_off()
        ax.legend(fontsize=7)
    paths.append(save(fig, "Prop. III.2: multi-mix vs large-batch mixup at equal compute (95% bootstrap CI)", "variance_vs_batch.png"))

    fig, axes = plt.subplots(1, len(names), figsize=(max(4.6 * len(names), 7.5), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        rows = results["tasks"][name]["scope_sampling"]
        v, e = err(rows)
        labels = [f"{r['lambda_scope']}\n{r['lambda_sampling']}" for r in rows]
        ax.bar(range(len(rows)), v, yerr=e, capsize=4, color=["C0", "C1", "C2", "C3"][:len(rows)])
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(labels)
        ax.set(ylabel="Var[g]", title=f"{name}: mixup K={cfg['k_compare']}, B={cfg['k_batch']}")
    paths.append(save(fig, "lambda_scope and lambda_sampling (95% bootstrap CI)", "scope_sampling.png"))

    fig, axes = plt.subplots(1, len(names), figsize=(max(4.8 * len(names), 7.5), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        res = results["tasks"][name]
        rows = res["k_sweep"] + res["scope_sampling"] + [r for c in res["prop_III_2"].values()
                                                         for r in c["multimix"] + c["large_batch"]]
        for mode in res["prop_III_1"]:
            pts = [r for r in rows if r["mode"] == mode]
            ax.scatter([r["var"] for r in pts], [r["surrogate"] for r in pts], s=14, label=mode)
        ax.set(xscale="log", yscale="log", xlabel="Var[g] (measured)", ylabel="E||g||² (surrogate)",
               title=f"{name}: Spearman {res['surrogate']['spearman_all']:.2f}")
        ax.legend(fontsize=8)
    paths.append(save(fig, "Does the paper's surrogate E||g||² track the variance? (every setting)", "surrogate.png"))
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.evidence", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("variance", help="gradient variance at fixed weights (Prop. III.1, III.2)")
    v.add_argument("--quick", action="store_true", help="the spiral MLP only, under a minute")
    v.add_argument("--out", type=Path, default=None,
                   help="results folder (default: docs/evidence, outputs/evidence-quick with --quick)")
    v.add_argument("--draws", type=int, default=None,
                   help="gradients per setting (default 200; spiral MLP 1000, 400 with --quick)")
    v.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    args = parser.parse_args(argv)
    cfg = VarianceConfig.quick() if args.quick else VarianceConfig()
    if args.draws is not None:
        if args.draws < 2:
            parser.error("--draws must be >= 2")
        cfg = replace(cfg, draws=args.draws, spiral_draws=args.draws)
    cfg = replace(cfg, seed=args.seed)
    out = args.out or Path("outputs/evidence-quick" if args.quick else "docs/evidence")
    results = run_variance(cfg, out)
    print(markdown(results))
    print(f"wrote {out / 'variance.json'}, {out / 'variance.md'} and "
          f"{', '.join(p.name for p in sorted(out.glob('*.png')))} in {out.resolve()} "
          f"({results['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
