"""The torch side on CUDA tensors against its CPU results: multimix_batch, ManifoldMultiMix and
Puzzle Mix (the transport and mix on the device; the graph cut itself runs on the CPU). Needs
torch with CUDA, no DALI."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytestmark = pytest.mark.gpu
MEAN, STD = [125.3, 123.0, 113.9], [63.0, 62.1, 66.7]


@pytest.fixture
def torch(torch_cuda):
    torch_cuda.backends.cudnn.allow_tf32 = False  # CPU-comparable float32 convolutions
    torch_cuda.backends.cuda.matmul.allow_tf32 = False
    return torch_cuda


def images(torch, dtype, batch=6, size=16):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=g)
    return (x * 255).round().to(torch.uint8) if dtype == "uint8" else ((x - 0.5) / 0.25).to(getattr(torch, dtype))


@pytest.mark.parametrize("mode", ["mixup", "cutmix", "fmix"])
@pytest.mark.parametrize("dtype", ["uint8", "float16", "float32"])
@pytest.mark.parametrize("lambda_scope", ["batch", "sample"])
def test_multimix_batch_on_cuda_equals_cpu(torch, mode, dtype, lambda_scope):
    from dali_multimix.torch import multimix_batch

    x, y = images(torch, dtype), torch.arange(6)
    kwargs = dict(k=4, mode=mode, lambda_scope=lambda_scope)
    cpu = multimix_batch(x, y, generator=torch.Generator().manual_seed(5), **kwargs)
    gpu = multimix_batch(x.cuda(), y.cuda(), generator=torch.Generator().manual_seed(5), **kwargs)
    assert gpu.images.device.type == "cuda" and gpu.images.dtype == x.dtype
    torch.testing.assert_close(gpu.weights.cpu(), cpu.weights, rtol=0, atol=0)
    assert torch.equal(gpu.partners.cpu(), cpu.partners)
    assert torch.equal(gpu.partner_labels.cpu(), cpu.partner_labels)
    if mode != "mixup":  # selection only: exact
        assert torch.equal(gpu.images.cpu(), cpu.images)
    elif dtype == "uint8":  # a blend rounded to integers: at most one level apart
        assert (gpu.images.cpu().int() - cpu.images.int()).abs().max() <= 1
    else:
        atol = 1e-3 if dtype == "float16" else 1e-6
        torch.testing.assert_close(gpu.images.cpu().float(), cpu.images.float(), rtol=0, atol=atol)


def small_cnn(torch):
    from torch import nn
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))


@pytest.mark.parametrize("layer", ["", "1", "3"])
def test_manifold_multimix_on_cuda_equals_cpu(torch, layer):
    import copy

    from dali_multimix.torch import ManifoldMultiMix, mixed_cross_entropy

    cpu_model = small_cnn(torch)
    gpu_model = copy.deepcopy(cpu_model).cuda()
    x, y = images(torch, "float32"), torch.arange(6) % 5
    results = []
    for model, device in ((cpu_model, "cpu"), (gpu_model, "cuda")):
        mixer = ManifoldMultiMix(model, [layer], k=3, generator=torch.Generator().manual_seed(9))
        with mixer:
            logits = model(x.to(device))
            y1, y2, w = mixer.targets(y.to(device))
            loss = mixed_cross_entropy(logits, y1, y2, w)
            loss.backward()
        results.append((logits.detach().cpu(), float(loss.detach()), model[0].weight.grad.cpu(),
                        mixer.last.lambdas.cpu()))
    (l_cpu, loss_cpu, g_cpu, lam_cpu), (l_gpu, loss_gpu, g_gpu, lam_gpu) = results
    assert torch.equal(lam_cpu, lam_gpu)
    torch.testing.assert_close(l_gpu, l_cpu, rtol=1e-4, atol=1e-5)
    assert abs(loss_gpu - loss_cpu) < 1e-4
    torch.testing.assert_close(g_gpu, g_cpu, rtol=1e-3, atol=1e-5)


def test_puzzle_mix_compose_on_cuda_equals_cpu(torch):
    from dali_multimix.torch.puzzle import PuzzleMix

    puzzle = PuzzleMix(3, mean=MEAN, std=STD)
    x = images(torch, "float32")
    g = torch.Generator().manual_seed(1)
    saliency = torch.rand(6, 16, 16, generator=g)
    mask = torch.randint(0, 3, (6, 3, 4, 4), generator=g).float() / 2
    partners = torch.randperm(6, generator=g)
    cpu = puzzle.compose(x, saliency, partners, mask)
    gpu = puzzle.compose(x.cuda(), saliency.cuda(), partners.cuda(), mask.cuda())
    assert gpu.images.device.type == "cuda"
    torch.testing.assert_close(gpu.images.cpu(), cpu.images, rtol=0, atol=1e-6)
    torch.testing.assert_close(gpu.weights.cpu(), cpu.weights, rtol=0, atol=1e-6)


def test_puzzle_transport_cuda_graph_equals_the_cpu_rounds(torch):
    """The transport rounds replayed as a CUDA graph: equal to the CPU rounds for every call, new
    inputs of a captured shape included (a stale static input or output would show), ties too."""
    from dali_multimix.torch.puzzle import (_TRANSPORT_GRAPHS, release_transport_graphs,
                                            transport_sources)

    g = torch.Generator().manual_seed(7)
    for n, grids in ((2, 40), (8, 40), (16, 12), (8, 40)):
        for call in range(3):
            saliency = torch.rand(grids, n, n, generator=g)
            if call == 2:  # few levels: ties everywhere
                saliency = torch.randint(0, 3, (grids, n, n), generator=g).float()
            saliency = saliency / saliency.sum((1, 2), keepdim=True).clamp_min(1e-12)
            mask = torch.randint(0, 3, (grids, n, n), generator=g).float() / 2
            cpu = transport_sources(mask, saliency, 0.8, backend="torch")
            gpu = transport_sources(mask.cuda(), saliency.cuda(), 0.8, backend="torch")
            assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu), (n, call)
    captured = {key[1] for key, entry in _TRANSPORT_GRAPHS.items() if entry is not None}
    assert {(40, 2, 2), (40, 8, 8), (12, 16, 16)} <= captured  # replayed for the later calls
    release_transport_graphs()
    assert not _TRANSPORT_GRAPHS
    assert torch.equal(transport_sources(mask.cuda(), saliency.cuda(), 0.8, backend="torch").cpu(), cpu)


@pytest.mark.skipif(importlib.util.find_spec("maxflow") is None,
                    reason="PyMaxflow (Puzzle Mix's exact graph cut) is not installed")
def test_puzzle_mix_step_on_cuda_equals_cpu(torch):
    """A whole Puzzle Mix batch, saliency pass included, on CUDA and on the CPU (same generator)."""
    import copy

    from dali_multimix.torch.puzzle import PuzzleMix

    cpu_model = small_cnn(torch)
    gpu_model = copy.deepcopy(cpu_model).cuda()
    x, y = images(torch, "float32"), torch.arange(6) % 5
    cpu = PuzzleMix(2, mean=MEAN, std=STD, generator=torch.Generator().manual_seed(4))(cpu_model, x, y)
    gpu = PuzzleMix(2, mean=MEAN, std=STD, generator=torch.Generator().manual_seed(4))(
        gpu_model, x.cuda(), y.cuda())
    assert gpu.images.device.type == "cuda"
    assert torch.equal(gpu.partner_labels.cpu(), cpu.partner_labels)
    torch.testing.assert_close(gpu.weights.cpu(), cpu.weights, rtol=0, atol=1e-6)
    torch.testing.assert_close(gpu.images.cpu(), cpu.images, rtol=0, atol=1e-5)


def test_amp_step_with_every_scaled_loss_on_cuda(torch):
    """Puzzle Mix's saliency pass with the clean loss under fp16 autocast and a GradScaler: finite
    saliency and gradients on the device."""
    from dali_multimix.torch.puzzle import input_saliency

    model = small_cnn(torch).cuda()
    scaler = torch.amp.GradScaler("cuda")
    x, y = images(torch, "float32").cuda(), (torch.arange(6) % 5).cuda()
    with torch.autocast("cuda", dtype=torch.float16):
        saliency = input_saliency(model, x, y, 0.5, scaler=scaler)
    assert saliency.shape == (6, 16, 16) and bool(torch.isfinite(saliency).all())
    assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)
    assert np.isfinite(float(scaler.get_scale()))
