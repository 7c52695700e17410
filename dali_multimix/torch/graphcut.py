"""Multi-label graph cuts on a block grid, for Puzzle Mix's masks (Kim, Choo, Song, "Puzzle Mix:
Exploiting Saliency and Local Statistics for Optimal Mixup", ICML 2020; the authors' code:
https://github.com/snu-mllab/PuzzleMix, ``mixup.py``), used K times per pair by multi-mix
(Shen et al., "Mixup Augmentation with Multiple Interpolations", Sec. III-A3).

The energy of a labelling l (labels 0..L-1, mask value 1 - l/(L-1)) is

    E(l) = sum_p U_p(l_p) + sum_(p,q) w_pq (l_p - l_q)^2 / (L - 1)^2

over the 4-neighbour edges of an n x n grid (w_pq >= 0). The pairwise term is convex in
l_p - l_q, so with L - 1 bits per block (l = x_1 + ... + x_{L-1}, x_1 >= x_2 >= ...) the energy is
a submodular function of the bits and one s-t minimum cut gives the exact optimum
(:func:`solve_exact`, PyMaxflow). :func:`solve_swap` runs gco's alpha-beta swap, the solver of
the original code: either on the original's integer quantisation (``scale``: costs truncated to
multiples of 1/scale, as ``graphcut_multi`` does with scale = 1000 * n^2, without its int32
overflow) or on costs scaled automatically so that no sum of them can overflow int32.

:func:`solve_batch` solves many energies of one grid size at once: natively (the C++ library
``libmultimix_graphcut.so`` built next to the plugin, csrc/graphcut_*: the same bit graph as
:func:`solve_exact`, Boykov-Kolmogorov max-flow, graphs spread over threads, no GIL held) when
that library is present, else with PyMaxflow graph by graph. Both give the exact optimum; the
native cut is the same canonical one (a bit is 1 iff its node still reaches the sink), so the
labels agree too wherever rounding does not tie two cuts. :func:`solve_steps` takes the K energies
of each Puzzle Mix sample together (shared pairwise weights, priors ordered with lambda) and cuts
them nested, each after the first only on the bits the others leave open: the same labels.
"""
from __future__ import annotations

import ctypes
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

# gco (pygco through ctypes) is not thread-safe: two threads building graphs at once corrupt the
# heap and abort the process. Its calls are serialised here; the exact solver needs no lock.
_GCO_LOCK = threading.Lock()


@dataclass
class GridEnergy:
    """unary (n, m, L); cost_v (n-1, m): weight between (i, j) and (i+1, j); cost_h (n, m-1)."""

    unary: np.ndarray
    cost_v: np.ndarray
    cost_h: np.ndarray

    def __post_init__(self):
        self.unary = np.asarray(self.unary, np.float64)
        self.cost_v = np.asarray(self.cost_v, np.float64)
        self.cost_h = np.asarray(self.cost_h, np.float64)
        n, m, labels = self.unary.shape
        if labels < 2:
            raise ValueError(f"unary must have at least 2 labels; got shape {self.unary.shape}")
        if self.cost_v.shape != (n - 1, m) or self.cost_h.shape != (n, m - 1):
            raise ValueError(f"cost_v must be {(n - 1, m)} and cost_h {(n, m - 1)}; got "
                             f"{self.cost_v.shape} and {self.cost_h.shape}")
        if (self.cost_v < 0).any() or (self.cost_h < 0).any():
            raise ValueError("pairwise weights must be >= 0")
        if not (np.isfinite(self.unary).all() and np.isfinite(self.cost_v).all()
                and np.isfinite(self.cost_h).all()):
            raise ValueError("costs must be finite")

    @property
    def n_labels(self) -> int:
        return self.unary.shape[2]

    def energy(self, labels: np.ndarray) -> float:
        labels = np.asarray(labels)
        scale = (self.n_labels - 1) ** 2
        unary = np.take_along_axis(self.unary, labels[..., None], axis=2).sum()
        vertical = (self.cost_v * (labels[1:] - labels[:-1]) ** 2).sum() / scale
        horizontal = (self.cost_h * (labels[:, 1:] - labels[:, :-1]) ** 2).sum() / scale
        return float(unary + vertical + horizontal)


def _edges(shape):
    """(p, q, weight index) of the vertical then horizontal grid edges, p and q flat indices."""
    n, m = shape
    idx = np.arange(n * m).reshape(n, m)
    return (idx[:-1].ravel(), idx[1:].ravel()), (idx[:, :-1].ravel(), idx[:, 1:].ravel())


def solve_exact(e: GridEnergy) -> np.ndarray:
    """The labelling of minimum energy: one s-t minimum cut (PyMaxflow) on L - 1 ordered bits per
    block. Bit b of block p is 1 iff l_p >= b; under that order l^2 = sum_b (2b - 1) x_b, so
    every term is linear in the bits except -2 w x_pb x_qc, which is submodular."""
    import maxflow

    n, m, L = e.unary.shape
    bits = L - 1
    nodes = n * m
    w_scale = 1.0 / (L - 1) ** 2
    # linear coefficient of every bit: unary differences U(b) - U(b - 1)
    linear = (e.unary[..., 1:] - e.unary[..., :-1]).reshape(nodes, bits).copy()
    (vp, vq), (hp, hq) = _edges((n, m))
    p_all = np.concatenate([vp, hp])
    q_all = np.concatenate([vq, hq])
    w_all = np.concatenate([e.cost_v.ravel(), e.cost_h.ravel()]) * w_scale
    odd = 2.0 * np.arange(1, bits + 1) - 1.0          # l^2 = sum_b (2b - 1) x_b
    # w (l_p - l_q)^2 = w l_p^2 + w l_q^2 - 2 w sum_bc x_pb x_qc, and
    # -2 w x y = -2 w x + 2 w [x = 1][y = 0]
    np.add.at(linear, p_all, w_all[:, None] * (odd - 2.0 * bits))
    np.add.at(linear, q_all, w_all[:, None] * odd)
    graph = maxflow.Graph[float]()
    ids = np.asarray(graph.add_nodes(nodes * bits))
    flat = linear.ravel()
    graph.add_grid_tedges(ids, np.maximum(flat, 0.0), np.maximum(-flat, 0.0))
    infinite = 1.0 + np.abs(flat).sum() + 4.0 * np.abs(w_all).sum() * bits * bits
    if bits > 1:  # x_b >= x_(b+1): forbid x_b = 0 with x_(b+1) = 1
        chain = ids.reshape(nodes, bits)
        first, second = chain[:, :-1].ravel(), chain[:, 1:].ravel()
        graph.add_edges(first, second, np.full(len(first), infinite), np.zeros(len(first)))
    keep = w_all > 0
    b_idx, c_idx = np.meshgrid(np.arange(bits), np.arange(bits), indexing="ij")
    # [x_pb = 1][x_qc = 0]: cut when x_qc is in S and x_pb in T
    src = (q_all[keep, None] * bits + c_idx.ravel()[None]).ravel()
    dst = (p_all[keep, None] * bits + b_idx.ravel()[None]).ravel()
    caps = np.repeat(2.0 * w_all[keep], bits * bits)
    if len(src):
        graph.add_edges(ids[src], ids[dst], caps, np.zeros(len(caps)))
    graph.maxflow()
    x = graph.get_grid_segments(ids).reshape(nodes, bits).astype(np.int64)
    return x.sum(1).reshape(n, m)


def swap_scale(block_num: int) -> float:
    """The original's integer scale for an n x n block grid (``large_val = 1000 * n^2`` in
    ``graphcut_multi``): costs are truncated to multiples of 1 / scale before gco."""
    return 1000.0 * block_num ** 2


def solve_swap(e: GridEnergy, max_int: int = 2 ** 26, *, scale: Optional[float] = None) -> np.ndarray:
    """gco's alpha-beta swap (the original solver). Returns the (n, m) int labels.

    scale=None: costs are scaled to integers so that no sum of them can overflow int32.
    scale=s: the original's quantisation (``graphcut_multi``): unary trunc(s * U), edge weights
    trunc(s * w) computed in float32, label costs trunc(100 * (i - j)^2 / (L - 1)^2) and unary x 100
    (gco's float mode multiplies unary by 1e5, weights by 1e3, label costs by 100; the common factor
    1000 is left out, so the same labelling comes out while int32 cannot overflow where the
    original's x 1e5 did). With s = :func:`swap_scale` (n) the labels equal the original's."""
    import gco

    n, m, L = e.unary.shape
    labels_diff = np.subtract.outer(np.arange(L), np.arange(L)) ** 2
    if scale is None:
        unary = e.unary - e.unary.min(axis=2, keepdims=True)  # a constant per block changes nothing
        total = unary.max(axis=2).sum() + (e.cost_v.sum() + e.cost_h.sum())
        auto = max_int / max(total, 1e-12)
        w = auto / (L - 1) ** 2
        args = (np.rint(unary * auto).astype(np.int32), labels_diff.astype(np.int32),
                np.rint(e.cost_v * w).astype(np.int32), np.rint(e.cost_h * w).astype(np.int32))
    else:
        if not (isinstance(scale, (int, float)) and np.isfinite(scale) and scale > 0):
            raise ValueError(f"solve_swap: `scale` must be a finite number > 0; got {scale!r}")
        unary = scale * e.unary
        big = max(np.abs(unary).max(), scale * max(e.cost_v.max(initial=0), e.cost_h.max(initial=0)))
        if 100 * big >= 2 ** 31 - 1:
            raise ValueError(f"solve_swap: costs x `scale` ({scale}) reach {big:.3g}: over int32 / 100")
        pair = (np.asarray(labels_diff / (L - 1) ** 2, np.float32) * 100).astype(np.int32)
        s32 = np.float32(scale)
        args = (unary.astype(np.int32) * np.int32(100), pair,
                (e.cost_v.astype(np.float32) * s32).astype(np.int32),
                (e.cost_h.astype(np.float32) * s32).astype(np.int32))
    with _GCO_LOCK:
        labels = gco.cut_grid_graph(*args, algorithm="swap")
    return labels.reshape(n, m)


# ------------------------------------------------------------------ the native batched solver

_NATIVE_ABI = 7
_NATIVE_NAME = "libmultimix_graphcut.so"
_NATIVE: dict = {}


def native_library() -> Optional[ctypes.CDLL]:
    """The native graph-cut library (``libmultimix_graphcut.so`` next to the plugin: in the package
    directory or, when a source checkout shadows it, the installed distribution's; or the file
    named by the environment variable ``DALI_MULTIMIX_GRAPHCUT_LIB``), or None when it is not
    there. Loaded once; ctypes.CDLL releases the GIL during its calls."""
    if "lib" not in _NATIVE:
        path = os.environ.get("DALI_MULTIMIX_GRAPHCUT_LIB")
        if not path:
            try:
                from .. import _installed_file
                path = str(_installed_file(_NATIVE_NAME))
            except ImportError:
                path = str(Path(__file__).resolve().parent.parent / _NATIVE_NAME)
        lib = None
        try:
            lib = ctypes.CDLL(path)
            if lib.mm_graphcut_abi_version() != _NATIVE_ABI:
                lib = None
        except (OSError, AttributeError):
            lib = None
        if lib is not None:
            dp, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32
            lib.mm_graphcut_solve.argtypes = [dp, dp, dp, i64, i32, i32, i32, i32, dp]
            lib.mm_graphcut_solve.restype = ctypes.c_int
            lib.mm_graphcut_solve_steps.argtypes = [dp, dp, dp, i64, i32, i32, i32, i32, i32, dp]
            lib.mm_graphcut_solve_steps.restype = ctypes.c_int
            f32 = ctypes.c_float
            lib.mm_puzzle_masks.argtypes = [dp, dp, dp, dp, dp, i64, i32, i32, i32, i32, i32, i32,
                                            f32, f32, i32, dp, dp, dp, dp, dp, dp]
            lib.mm_puzzle_masks.restype = ctypes.c_int
            lib.mm_binomial_pmf.argtypes = [dp, i64, i32, dp, dp]
            lib.mm_binomial_pmf.restype = None
            lib.mm_avg_pool.argtypes = [dp, i64, i32, i32, i32, i32, dp]
            lib.mm_avg_pool.restype = ctypes.c_int
            lib.mm_puzzle_transport.argtypes = [dp, dp, i64, i32, ctypes.c_float, i32, dp]
            lib.mm_puzzle_transport.restype = ctypes.c_int
            lib.mm_stream_read_write.argtypes = [dp, i64, dp, i64, i32]
            lib.mm_stream_read_write.restype = ctypes.c_uint64
            u64 = ctypes.c_uint64
            lib.mm_philox_words.argtypes = [u64, u64, u64, i32, i64, dp]
            lib.mm_philox_words.restype = None
            lib.mm_fmix_noise.argtypes = [u64, u64, u64, i32, i32, i32, ctypes.c_double, dp, dp,
                                          dp]
            lib.mm_fmix_noise.restype = ctypes.c_int32
            lib.mm_fmix_map.argtypes = [u64, u64, u64, i32, i32, i32, ctypes.c_double, i32, dp,
                                        dp]
            lib.mm_fmix_map.restype = ctypes.c_int32
            lib.mm_standard_normals.argtypes = [u64, u64, u64, i32, i64, dp]
            lib.mm_standard_normals.restype = None
            lib.mm_use_openmp_team.argtypes = [dp]
            lib.mm_use_openmp_team.restype = None
            lib.mm_use_openmp_team(_torch_openmp_parallel())
        _NATIVE["lib"] = lib
    return _NATIVE["lib"]


def _torch_openmp_parallel() -> Optional[int]:
    """The address of GOMP_parallel in the OpenMP runtime that runs torch's intra-op threads
    (Linux, torch built with OpenMP: its own libgomp, or the system's), or None. The library's
    threads then are that team, awake right after torch's parallel ops, instead of new threads
    that would share the cores with it spinning. DALI_MULTIMIX_NO_OPENMP_TEAM=1: None."""
    if os.environ.get("DALI_MULTIMIX_NO_OPENMP_TEAM") == "1":
        return None
    try:
        import torch
        if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
            return None
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "omp" in line and ".so" in line}
    except (ImportError, OSError):
        return None
    torch_dir = str(Path(torch.__file__).resolve().parent)
    runtimes = [p for p in paths if re.search(r"/lib[gi]?omp[^/]*\.so", p)]  # GNU, Intel, LLVM
    for path in sorted(runtimes, key=lambda p: (not p.startswith(torch_dir), p)):  # torch's first
        try:
            return ctypes.cast(ctypes.CDLL(path).GOMP_parallel, ctypes.c_void_p).value
        except (OSError, AttributeError):
            continue
    return None


def native_available() -> bool:
    """Whether the native graph-cut library could be loaded."""
    return native_library() is not None


def _numbers(who: str, dtype, **arrays) -> list:
    """C-contiguous `dtype` copies (or views) of the named arrays, for a native call; TypeError
    naming the argument that is not an array of numbers."""
    out = []
    for name, value in arrays.items():
        try:
            out.append(np.ascontiguousarray(value, dtype=dtype))
        except (TypeError, ValueError):
            raise TypeError(f"{who}: `{name}` must be an array of numbers; got "
                            f"{type(value).__name__}") from None
    return out


def _check_energies(who: str, unary, cost_v, cost_h, steps: bool = False) -> tuple:
    """Validated C-contiguous float64 copies of a batch of energies (see :func:`solve_batch`;
    steps: unary has a K axis after G, see :func:`solve_steps`)."""
    unary, cost_v, cost_h = _numbers(who, np.float64, unary=unary, cost_v=cost_v, cost_h=cost_h)
    form = "(G, K, n, m, L)" if steps else "(G, n, m, L)"
    if (unary.ndim != 4 + steps or (steps and unary.shape[1] < 1) or unary.shape[-3] < 1
            or unary.shape[-2] < 1 or unary.shape[-1] < 2):
        raise ValueError(f"{who}: `unary` must be {form} with {'K, ' if steps else ''}n, m >= 1 and "
                         f"L >= 2; got {unary.shape}")
    g, (n, m, labels) = unary.shape[0], unary.shape[-3:]
    if labels > 256 or n > 4096 or m > 4096 or n * m * (labels - 1) > (1 << 24) or (
            steps and unary.shape[1] > 4096):
        raise ValueError(f"{who}: `unary` {form} must have L <= 256, n, m <= 4096, "
                         f"{'K <= 4096, ' if steps else ''}and n*m*(L-1) <= 2^24; got {unary.shape}")
    if cost_v.shape != (g, n - 1, m) or cost_h.shape != (g, n, m - 1):
        raise ValueError(f"{who}: `cost_v` must be {(g, n - 1, m)} and `cost_h` "
                         f"{(g, n, m - 1)}; got {cost_v.shape} and {cost_h.shape}")
    if not (np.isfinite(unary).all() and np.isfinite(cost_v).all() and np.isfinite(cost_h).all()):
        raise ValueError(f"{who}: `unary`, `cost_v` and `cost_h` must be finite")
    if (cost_v < 0).any() or (cost_h < 0).any():
        raise ValueError(f"{who}: pairwise weights `cost_v`, `cost_h` must be >= 0")
    return unary, cost_v, cost_h


def _native_for(who: str, backend: str, threads) -> Optional[ctypes.CDLL]:
    """The library a batched solve runs on (None: PyMaxflow), after checking its arguments."""
    if backend not in ("auto", "native", "maxflow"):
        raise ValueError(f"{who}: `backend` must be 'auto', 'native' or 'maxflow'; got {backend!r}")
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
        raise ValueError(f"{who}: `threads` must be an integer >= 0 (0: one per CPU); got "
                         f"{threads!r}")
    lib = native_library() if backend != "maxflow" else None
    if backend == "native" and lib is None:
        raise ValueError(f"{who}: backend 'native' needs libmultimix_graphcut.so (built with the "
                         "package; or DALI_MULTIMIX_GRAPHCUT_LIB); it could not be loaded")
    return lib


def solve_batch(unary, cost_v, cost_h, *, backend: str = "auto", threads: int = 0) -> np.ndarray:
    """The minimum-energy labels (G, n, m) int64 of G grid energies (see :class:`GridEnergy`):
    unary (G, n, m, L), cost_v (G, n-1, m), cost_h (G, n, m-1), finite, weights >= 0.

    backend "native": the C++ library (ValueError if it is not built); "maxflow": PyMaxflow graph
    by graph (:func:`solve_exact`, the reference); "auto": native when present, else maxflow.
    threads: native threads (0: one per CPU)."""
    lib = _native_for("solve_batch", backend, threads)
    unary, cost_v, cost_h = _check_energies("solve_batch", unary, cost_v, cost_h)
    g, n, m, labels = unary.shape
    if lib is None:
        out = [solve_exact(GridEnergy(unary[i], cost_v[i], cost_h[i])) for i in range(g)]
        return np.stack(out).astype(np.int64) if out else np.zeros((0, n, m), np.int64)
    out = np.empty((g, n, m), np.int32)
    rc = lib.mm_graphcut_solve(unary.ctypes.data, cost_v.ctypes.data, cost_h.ctypes.data, g, n, m,
                               labels, threads, out.ctypes.data)
    if rc != 0:  # sizes were checked above
        raise ValueError(f"solve_batch: the native solver refused sizes {unary.shape}")
    return out.astype(np.int64)


def solve_steps(unary, cost_v, cost_h, *, backend: str = "auto", threads: int = 0) -> np.ndarray:
    """The minimum-energy labels (G, K, n, m) int64 of G groups of K grid energies that share
    their pairwise weights (Puzzle Mix: the K steps of one sample, Shen et al. Sec. III-A3):
    unary (G, K, n, m, L), cost_v (G, n-1, m), cost_h (G, n, m-1), finite, weights >= 0.

    The labels are those of :func:`solve_batch` on every (group, step). Natively, consecutive
    steps whose bit costs are ordered (Puzzle Mix's priors for ascending lambdas) are cut nested:
    the sink set of the cheaper step contains the other's (Gallo, Grigoriadis, Tarjan 1989), so
    the steps are bisected, each bit open only between the steps that settled it, and each level
    of the bisection is one max-flow warm started from the level before (csrc/graphcut_grid.h
    SolveSteps). backend and threads as :func:`solve_batch` (threads over groups)."""
    lib = _native_for("solve_steps", backend, threads)
    unary, cost_v, cost_h = _check_energies("solve_steps", unary, cost_v, cost_h, steps=True)
    g, k, n, m, labels = unary.shape
    if lib is None:  # graph by graph: each step with its group's weights
        return solve_batch(unary.reshape(g * k, n, m, labels), np.repeat(cost_v, k, 0),
                           np.repeat(cost_h, k, 0), backend="maxflow").reshape(g, k, n, m)
    out = np.empty((g, k, n, m), np.int32)
    rc = lib.mm_graphcut_solve_steps(unary.ctypes.data, cost_v.ctypes.data, cost_h.ctypes.data, g,
                                     k, n, m, labels, threads, out.ctypes.data)
    if rc != 0:  # sizes were checked above
        raise ValueError(f"solve_steps: the native solver refused sizes {unary.shape}")
    return out.astype(np.int64)


#: the largest transport grid side the native transport takes (csrc/puzzle_transport.h
#: kMaxTransportSide: its scratch holds (n^2, n^2) costs); Puzzle Mix's grids have at most 16
NATIVE_TRANSPORT_MAX_SIDE = 32


def transport_native(mask: np.ndarray, saliency: np.ndarray, eps: float, *,
                     threads: int = 0) -> np.ndarray:
    """Puzzle Mix's block transport of G n x n grids in one native call (csrc/puzzle_transport.h;
    the rounds of :func:`dali_multimix.torch.puzzle.mask_transport`, bit for bit): mask (G, n, n)
    (> 0: the cell shows the image), saliency (G, n, n) cell saliency, both taken as float32;
    returns source (G, n^2) int64, the cell moved to each destination, n^2 for none.
    ValueError if the library is not built or n > :data:`NATIVE_TRANSPORT_MAX_SIDE`."""
    lib = native_library()
    if lib is None:
        raise ValueError("transport_native: needs libmultimix_graphcut.so (built with the package; or "
                         "DALI_MULTIMIX_GRAPHCUT_LIB); it could not be loaded")
    mask, saliency = _numbers("transport_native", np.float32, mask=mask, saliency=saliency)
    if mask.ndim != 3 or mask.shape[1] != mask.shape[2] or saliency.shape != mask.shape:
        raise ValueError(f"transport_native: `mask` and `saliency` must both be (G, n, n); got "
                         f"{mask.shape} and {saliency.shape}")
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
        raise ValueError(f"transport_native: `threads` must be an integer >= 0 (0: one per CPU); got "
                         f"{threads!r}")
    grids, n = mask.shape[0], mask.shape[1]
    if not 1 <= n <= NATIVE_TRANSPORT_MAX_SIDE:
        raise ValueError(f"transport_native: grids of 1 to {NATIVE_TRANSPORT_MAX_SIDE} cells per "
                         f"side; got {n}")
    source = np.empty((grids, n * n), np.int64)
    if lib.mm_puzzle_transport(mask.ctypes.data, saliency.ctypes.data, grids, n, float(eps),
                               threads, source.ctypes.data) != 0:
        raise ValueError(f"transport_native: the library refused grids of shape {mask.shape}")
    return source


def solve_native(e: GridEnergy) -> np.ndarray:
    """:func:`solve_exact` on the native library (one graph): the (n, m) labels of minimum energy."""
    return solve_batch(e.unary[None], e.cost_v[None], e.cost_h[None], backend="native", threads=1)[0]
