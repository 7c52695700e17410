"""Co-Mixup as a harness method.

Co-Mixup: J.-H. Kim, W. Choo, H. Jeong, H. O. Song, "Co-Mixup: Saliency Guided Joint Mixup with
Supermodular Diversity", ICLR 2021; the authors' code: https://github.com/snu-mllab/Co-Mixup
(commit 2a76816; ``match.py``: ``get_onehot_matrix``, ``graphcut_wrapper``, ``graphcut_multi``,
``resolve_label``, ``obj_fn``, ``mix_input``; ``mixup.py``: ``mixup_process``; ``main.py``: the
saliency pass, the compatibility distances and the clean loss). The multi-mix paper (Shen et al.,
"Mixup Augmentation with Multiple Interpolations") compares against it in Tables I and III-VIII.

Per batch: one saliency pass (as Puzzle Mix, :func:`.puzzle.input_saliency`); the batch is cut into
partitions of ``m_part`` inputs, each mixed into as many outputs. Per partition, on an n x n block
grid (``block_num``), a labelling z (n_output, n, n) -> input index minimises

    sum_outputs [ -saliency(z) - eta log(prior) + beta * (label changes between neighbours) ]
    + gamma * (supermodular diversity between outputs, with the compatibility matrix A)

by the original's iterative algorithm: a random initial labelling, then ``niter`` outer iterations
that visit the outputs in order and re-solve each one by an alpha-beta swap graph cut (gco) with
the other outputs' label counts as a modular (thresholded) penalty; from the second iteration an
output that used 2 (3 or more) inputs may also take the half-half mixes of them (soft cells); before
the last iteration identical outputs are pushed apart (``set_resolve``); early stop when the
objective changes by less than 1e-6 relatively. Images are mixed block-wise under the labelling and
soft labels are the label areas (:func:`mix_inputs`).

Randomness (kept apart from applying, :meth:`CoMixup.sample`): per partition a Dirichlet(alpha)
prior over its inputs and a uniform random initial labelling; with ``block_num=-1`` one block
count per batch from {2, 4, 8, 16} (the original's ``2 ** randint(1, 5)``), here restricted to the
counts that divide the image side.

Deviations from the original, each where the original cannot run or does not apply:

- the graph cuts are solved with gco exactly as ``graphcut_multi`` (float costs, Potts pairwise
  with the 0.25 entries of the soft labels); Puzzle Mix's :mod:`.graphcut` energies do not apply
  (their pairwise term is quadratic in an ordered label, Co-Mixup's is Potts over inputs);
- the compatibility distances (``main.py``: l1 between the peaks of the saliency averaged over
  8 x 8 windows) use min(8, side) windows on images smaller than 8 pixels, and when all the
  distances of a partition are 0 (one input, or all peaks at one place) the original divides 0 by
  0 (NaN costs): the compatibility term is then left out (A = (1 - omega) I);
- the harness's loss is cross-entropy against the soft labels (the original trains with
  ``BCELoss(softmax(out), target)``); the clean loss of the saliency pass (``main.py``:
  ``2 * clean_lam * CE / num_classes`` next to a BCE averaged over classes) is therefore
  ``2 * clean_lam * CE`` next to the cross-entropy of the mixed batch;
- the block count must divide the image side (the original pools with ``width // block_num`` and
  would give a different grid otherwise).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .graphcut import _GCO_LOCK
from .puzzle import _check_scaler, block_choices, input_saliency

#: the original's ``graphcut_wrapper`` soft labels of three inputs (rows: extra labels)
_SOFT3 = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]])
_PAIR3 = np.array([[0.25, 0.25, 1], [0.25, 1, 0.25], [1, 0.25, 0.25]], dtype=np.float32)
BLOCK_CHOICES = (2, 4, 8, 16)


class CoMixupResult(NamedTuple):
    """B rows: images (B, C, H, W) the mixed outputs; labels and partner_labels (B, num_classes)
    the soft labels (the same tensor twice); weights (B,) zeros. With these
    ``mixed_cross_entropy(logits, labels, partner_labels, weights)`` is the cross-entropy against
    the soft labels, so the harness handles it like a Puzzle Mix result."""

    images: torch.Tensor
    labels: torch.Tensor
    partner_labels: torch.Tensor
    weights: torch.Tensor


def compatibility_distances(saliency: torch.Tensor, window: int = 8) -> torch.Tensor:
    """(B, B) l1 distances between the saliency peaks of (B, H, W) saliency maps (the original's
    ``main.py``: argmax of the saliency averaged over window x window windows, stride 1, then
    ``distance(z, 'l1')``). The window is min(window, H, W)."""
    if saliency.dim() != 3:
        raise ValueError(f"compatibility_distances: `saliency` must be (B, H, W); got {tuple(saliency.shape)}")
    k = min(window, saliency.shape[-1], saliency.shape[-2])
    z = F.avg_pool2d(saliency[:, None].float(), kernel_size=k, stride=1)[:, 0]
    flat = torch.argmax(z.reshape(z.shape[0], -1), dim=1)
    peaks = torch.stack([flat // z.shape[-1], flat % z.shape[-1]], 1).float()
    return (peaks[:, None] - peaks[None]).abs().sum(-1)


def compatibility_matrix(a_dist: torch.Tensor, omega: float) -> torch.Tensor:
    """A = (1 - omega) I + omega * a_dist / sum(a_dist) * n for one partition's (n, n) distances
    (``mixup_process``); the second term is left out when all distances are 0 (see the module
    docstring)."""
    n = a_dist.shape[0]
    total = a_dist.sum()
    scaled = a_dist / total * n if float(total) != 0 else torch.zeros_like(a_dist)
    return (1 - omega) * torch.eye(n) + omega * scaled


def objective(cost: torch.Tensor, mask: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """The original's ``obj_fn``: unary + beta/2 * squared label changes between neighbours +
    gamma * (sum over pairs of different outputs of the products of their label areas).
    cost (n_input, n, n); mask (n_output, n, n, n_input); beta, gamma already divided by n^2."""
    n_output, height, width, n_input = mask.shape
    area = mask.reshape(n_output, height * width, n_input).sum(1)
    loss = torch.sum(cost.permute(1, 2, 0).unsqueeze(0) * mask)
    loss = loss + beta / 2 * (((mask[:, :-1] - mask[:, 1:]) ** 2).sum() +
                              ((mask[:, :, :-1] - mask[:, :, 1:]) ** 2).sum())
    return loss + gamma * (torch.sum(area.sum(0) ** 2) - torch.sum(area ** 2))


def _onehot(idx: torch.Tensor, n: int) -> torch.Tensor:
    return F.one_hot(idx.reshape(-1).long(), n).float()


def _cut(unary: np.ndarray, beta: float, n_label: int = 0, add_idx: Optional[np.ndarray] = None) -> np.ndarray:
    """``graphcut_multi``: gco alpha-beta swap with Potts pairwise (0.25 between a soft label and
    its inputs) and smoothness beta on every grid edge; float costs as the original."""
    import gco

    height, width, n = unary.shape
    pairwise = np.ones((n, n), np.float32) - np.eye(n, dtype=np.float32)
    if n_label == 2:
        pairwise[-1, :-1][add_idx] = 0.25
        pairwise[:-1, -1][add_idx] = 0.25
    elif n_label == 3:
        pairwise[-3:, :-3][:, add_idx] = _PAIR3
        pairwise[:-3, -3:][add_idx, :] = _PAIR3
    cost_v = beta * np.ones((height - 1, width), np.float32)
    cost_h = beta * np.ones((height, width - 1), np.float32)
    with _GCO_LOCK:
        return gco.cut_grid_graph(np.ascontiguousarray(unary), pairwise, cost_v, cost_h, algorithm="swap")


def _cut_output(cost: torch.Tensor, label_count: torch.Tensor, beta: float, iteration: int) -> torch.Tensor:
    """``graphcut_wrapper``: one output's labelling (n, n, n_input), with the half-half labels of
    the inputs it used (2, or the 3 most used) from the second iteration on."""
    height, width, n_input = cost.shape
    used = label_count > 0
    n_label = int(used.float().sum()) if iteration > 0 else 0
    if n_label == 2:
        extra = cost[:, :, used].mean(-1, keepdim=True) - 5e-4
        idx = _cut(torch.cat([cost, extra], -1).numpy(), beta, 2, used.numpy())
        onehot = _onehot(torch.from_numpy(idx), n_input + 1).reshape(height, width, n_input + 1)
        half = torch.zeros(1, 1, n_input)
        half[:, :, used] = 0.5
        return onehot[:, :, :n_input] + onehot[:, :, n_input:] * half
    if n_label >= 3:
        top = torch.zeros_like(used)
        top[torch.topk(label_count, k=3)[1]] = True
        extra = torch.matmul(cost[:, :, top], _SOFT3) - 5e-4
        idx = _cut(torch.cat([cost, extra], -1).numpy(), beta, 3, top.numpy())
        onehot = _onehot(torch.from_numpy(idx), n_input + 3).reshape(height, width, n_input + 3)
        soft = torch.zeros(3, n_input)
        soft[:, top] = _SOFT3
        return onehot[:, :, :n_input] + torch.matmul(onehot[:, :, n_input:], soft)
    idx = _cut(cost.numpy(), beta)
    return _onehot(torch.from_numpy(idx), n_input).reshape(height, width, n_input)


def _resolve(assigned: torch.Tensor) -> torch.Tensor:
    """``resolve_label``: for each pair of outputs using the same set of inputs (i1 < i2), a unit
    cost on the first input of i1 and the second input of i2 (sets of one input are left alone)."""
    add = torch.zeros_like(assigned)
    dist = torch.min((assigned[:, None] - assigned[None]).abs().sum(-1), torch.tensor(1.0))
    for i1, i2 in torch.triu(1.0 - dist, diagonal=1).nonzero():
        nonzeros = assigned[i1].nonzero()
        if len(nonzeros) > 1:
            add[i1][nonzeros[0]] = 1.0
            add[i2][nonzeros[1]] = 1.0
    return add


def comix_masks(cost: torch.Tensor, compat: torch.Tensor, prior: torch.Tensor, init: torch.Tensor, *,
                beta: float = 0.32, gamma: float = 1.0, eta: float = 0.05, thres: float = 0.83,
                thres_type: str = "hard", set_resolve: bool = True, niter: int = 4) -> torch.Tensor:
    """The labelling of one partition (``get_onehot_matrix`` with its randomness given).

    cost (n_input, n, n): minus the block saliency, normalised to sum 1 per input; compat (n_input,
    n_input): the compatibility matrix A (:func:`compatibility_matrix`); prior (n_input,): the
    Dirichlet draw; init (n_output, n, n) long: the initial labelling. beta, gamma, eta and thres
    are the original's (divided by n^2 here). Returns (n_output, n, n, n_input) float: per block
    the weight of each input (1, or 0.5 on soft cells)."""
    if thres_type not in ("hard", "soft"):
        raise ValueError(f"comix_masks: `thres_type` must be 'hard' or 'soft'; got {thres_type!r}")
    n_input, height, width = cost.shape
    n_output = init.shape[0]
    if init.shape[1:] != (height, width) or compat.shape != (n_input, n_input) or prior.shape != (n_input,):
        raise ValueError(f"comix_masks: `init` must be (n_output, {height}, {width}), `compat` "
                         f"({n_input}, {n_input}) and `prior` ({n_input},); got {tuple(init.shape)}, "
                         f"{tuple(compat.shape)}, {tuple(prior.shape)}")
    cells = height * width  # the original's order of operations, for bit-equal costs
    thres = thres * height * width
    beta, gamma, eta = beta / height / width, gamma / height / width, eta / height / width
    cost = cost.float() - eta * torch.log(prior.float().reshape(n_input, 1, 1) + 1e-8)
    A = compat.float()
    add_cost = None
    mask = _onehot(init, n_input).reshape(n_output, height, width, n_input)
    loss_prev = objective(cost, mask, beta, gamma)
    penalty = _onehot(init, n_input).sum(0).reshape(-1, 1, 1)
    for iteration in range(niter):
        for i in range(n_output):
            label_count = mask[i].reshape(cells, n_input).sum(0)
            penalty -= label_count.reshape(-1, 1, 1)
            p = penalty.squeeze()
            if thres_type == "hard":  # the original's precedence: ((A p > t) * A) @ p
                modular = (2 * gamma * ((A @ p > thres).float() * A @ p)).reshape(-1, 1, 1)
            else:
                modular = (2 * gamma * ((A @ p > thres).float() * (A @ p - thres))).reshape(-1, 1, 1)
            if add_cost is not None:
                unary = (cost + modular + gamma * add_cost[i].reshape(-1, 1, 1)).permute(1, 2, 0)
            else:
                unary = (cost + modular).permute(1, 2, 0)
            mask[i] = _cut_output(unary.contiguous(), label_count, beta, iteration)
            penalty += mask[i].reshape(cells, n_input).sum(0).reshape(-1, 1, 1)
        if iteration == niter - 2 and set_resolve:
            add_cost = _resolve((mask.reshape(n_output, -1, n_input).sum(1) > 0).float())
        loss = objective(cost, mask, beta, gamma)
        if (loss_prev - loss).abs() / loss.abs() < 1e-6:
            break
        loss_prev = loss
    return mask


def mix_inputs(mask: torch.Tensor, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``mix_input``: mask (n_output, n, n, n_input) block weights, x (n_input, C, H, W), targets
    (n_input, num_classes) one-hot. Returns the outputs (n_output, C, H, W), blocks upsampled to
    pixels (nearest), and their soft labels (n_output, num_classes): label areas, normalised."""
    n_output, height, width, n_input = mask.shape
    mask = mask.to(x.device, x.dtype)
    up = F.interpolate(mask.permute(0, 3, 1, 2), size=x.shape[-1], mode="nearest")
    output = torch.sum(up.unsqueeze(2) * x.unsqueeze(0), dim=1)
    target = torch.matmul(mask, targets.to(mask)).reshape(n_output, height * width, -1).sum(-2)
    return output, target / target.sum(-1, keepdim=True)


class CoMixup:
    """Co-Mixup (Kim et al., ICLR 2021) in the harness: ``CoMixup(num_classes)(model, x, y)`` ->
    :class:`CoMixupResult` of B rows for x (B, C, H, W) normalised images (H == W) and y (B,)
    class indices. Defaults: the original CIFAR-100 setting (``main.py``): 4 x 4 blocks, m_part 20,
    beta 0.32, gamma 1, thres 0.83 (hard), eta 0.05, Dirichlet alpha 2, omega 0.001, resolve on,
    4 outer iterations, clean_lam 1. See the module docstring for the algorithm and deviations."""

    def __init__(self, num_classes: int, *, m_part: int = 20, block_num: int = 4, beta: float = 0.32,
                 gamma: float = 1.0, thres: float = 0.83, thres_type: str = "hard", eta: float = 0.05,
                 alpha: float = 2.0, omega: float = 0.001, set_resolve: bool = True, niter: int = 4,
                 clean_lam: float = 1.0, generator: Optional[torch.Generator] = None):
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"CoMixup: `num_classes` must be an integer >= 1; got {num_classes!r}")
        if not isinstance(m_part, int) or m_part < 1:
            raise ValueError(f"CoMixup: `m_part` must be an integer >= 1; got {m_part!r}")
        if not isinstance(block_num, int) or not (block_num >= 1 or block_num == -1):
            raise ValueError(f"CoMixup: `block_num` must be an integer >= 1, or -1 (random); got {block_num!r}")
        if thres_type not in ("hard", "soft"):
            raise ValueError(f"CoMixup: `thres_type` must be 'hard' or 'soft'; got {thres_type!r}")
        if not alpha > 0:
            raise ValueError(f"CoMixup: `alpha` must be > 0; got {alpha}")
        if not isinstance(niter, int) or niter < 1:
            raise ValueError(f"CoMixup: `niter` must be an integer >= 1; got {niter!r}")
        if not 0 <= omega <= 1:
            raise ValueError(f"CoMixup: `omega` must be in [0, 1]; got {omega}")
        if clean_lam < 0:
            raise ValueError(f"CoMixup: `clean_lam` must be >= 0; got {clean_lam}")
        self.num_classes, self.m_part, self.block_num = num_classes, m_part, block_num
        self.beta, self.gamma, self.thres, self.thres_type = beta, gamma, thres, thres_type
        self.eta, self.alpha, self.omega, self.set_resolve = eta, alpha, omega, set_resolve
        self.niter, self.clean_lam, self.generator = niter, clean_lam, generator

    def sample(self, batch: int, width: int, generator: Optional[torch.Generator] = None):
        """The randomness of one batch: (block_num, priors, inits), per partition a Dirichlet(alpha)
        prior (n_part,) and a uniform initial labelling (n_part, n, n), drawn from `generator`."""
        if self.block_num == -1:
            choices = block_choices(width, BLOCK_CHOICES)
            if not choices:
                raise ValueError(f"CoMixup: no block count of {BLOCK_CHOICES} divides the image side {width}")
            block_num = choices[int(torch.randint(len(choices), (1,), generator=generator))]
        else:
            block_num = self.block_num
        priors, inits = [], []
        for start in range(0, batch, self.m_part):
            n = min(self.m_part, batch - start)
            priors.append(torch._sample_dirichlet(torch.full((n,), float(self.alpha)), generator=generator))
            inits.append(torch.randint(n, (n, block_num, block_num), generator=generator))
        return block_num, priors, inits

    def mix(self, x: torch.Tensor, targets: torch.Tensor, saliency: torch.Tensor, distances: torch.Tensor,
            block_num: int, priors: list, inits: list) -> tuple[torch.Tensor, torch.Tensor, list]:
        """Co-Mixup with given randomness (``mixup_process``): x (B, C, H, W), targets (B, classes)
        one-hot, saliency (B, H, W), distances (B, B) (:func:`compatibility_distances`), block_num
        dividing H, priors / inits per partition of m_part rows (:meth:`sample`). Returns the mixed
        images (B, C, H, W), soft labels (B, classes) and the masks of the partitions."""
        batch, width = x.shape[0], x.shape[-1]
        if not isinstance(block_num, int) or block_num < 1 or width % block_num:
            raise ValueError(f"CoMixup.mix: `block_num` must be an integer dividing the image side {width}; "
                             f"got {block_num!r}")
        if saliency.shape != (batch, width, width) or distances.shape != (batch, batch):
            raise ValueError(f"CoMixup.mix: `saliency` must be (B, H, W) = {(batch, width, width)} and "
                             f"`distances` (B, B); got {tuple(saliency.shape)}, {tuple(distances.shape)}")
        parts = math.ceil(batch / self.m_part)
        if len(priors) != parts or len(inits) != parts:
            raise ValueError(f"CoMixup.mix: `priors` and `inits` need one entry per partition ({parts}); "
                             f"got {len(priors)} and {len(inits)}")
        with torch.no_grad():
            sc = F.avg_pool2d(saliency.detach().float().cpu()[:, None], width // block_num)[:, 0]
            outputs, labels, masks = [], [], []
            for p in range(parts):
                rows = slice(p * self.m_part, (p + 1) * self.m_part)
                part = sc[rows]
                n = part.shape[0]
                cost = -(part / part.reshape(n, -1).sum(1).reshape(n, 1, 1))
                compat = compatibility_matrix(distances[rows, rows].float().cpu(), self.omega)
                mask = comix_masks(cost, compat, priors[p], inits[p], beta=self.beta, gamma=self.gamma,
                                   eta=self.eta, thres=self.thres, thres_type=self.thres_type,
                                   set_resolve=self.set_resolve, niter=self.niter)
                out, target = mix_inputs(mask, x[rows].detach(), targets[rows])
                outputs.append(out)
                labels.append(target)
                masks.append(mask)
        return torch.cat(outputs).contiguous(), torch.cat(labels), masks

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                 scaler: Optional["torch.amp.GradScaler"] = None) -> CoMixupResult:
        """One batch: the saliency pass (with the clean loss, 2 * clean_lam * CE, when clean_lam >
        0; its parameter gradients add to the step's), the compatibility distances, :meth:`sample`
        and :meth:`mix`. `scaler`: the step's GradScaler under mixed precision."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[-1] != x.shape[-2]:
            raise ValueError(f"CoMixup: `x` must be a (B, C, H, W) tensor with H == W; got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"CoMixup: `y` has {y.shape[0]} rows for {x.shape[0]} images")
        _check_scaler(scaler, "CoMixup")
        y = y.reshape(-1).long()
        if int(y.min()) < 0 or int(y.max()) >= self.num_classes:
            raise ValueError(f"CoMixup: labels must be in [0, {self.num_classes}); got {int(y.min())}..{int(y.max())}")
        saliency = input_saliency(model, x, y, 2 * self.clean_lam, scaler=scaler)
        distances = compatibility_distances(saliency)
        block_num, priors, inits = self.sample(x.shape[0], x.shape[-1], self.generator)
        images, soft, _ = self.mix(x, F.one_hot(y, self.num_classes).float(), saliency, distances,
                                   block_num, priors, inits)
        return CoMixupResult(images, soft, soft, torch.zeros(len(soft), device=soft.device))
