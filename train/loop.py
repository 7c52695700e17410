"""The training loop, readable top to bottom: data, model, optimiser, then per epoch: train on
the method's mixed batches, evaluate, log, checkpoint atomically."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from dali_multimix.torch import ManifoldMultiMix, mixed_cross_entropy
from dali_multimix.torch.comixup import CoMixup
from dali_multimix.torch.puzzle import PuzzleMix, SaliencyMix

from . import checkpoint
from .config import TrainConfig, checked, resolved, save_config
from .data import eval_loader, load_data, steps_per_epoch, train_loader
from .methods import batch_size as method_batch_size, interpolations, label_smoothing, resolve_method
from .metrics import expected_calibration_error, plot_curves, reliability_diagram, summarise
from .models import build_model
from .schedule import learning_rate
from .step_stats import StepStats, mixed_accuracy, squared_grad_norm


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module):
    """The optimiser; its learning rate is set before every step (train/schedule.py)."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                           nesterov=cfg.nesterov and cfg.momentum > 0, weight_decay=cfg.weight_decay)


def distributed() -> tuple[int, int]:
    """(rank, world size); joins the process group that torchrun describes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


@torch.no_grad()
def evaluate(model, loader, device, cfg: TrainConfig, epoch: int):
    """Top-1 error, ECE and ``noisy_test_error``: the error on whole images plus Gaussian noise
    of std cfg.noise_std in normalised units (the harness's own corruption check; not the paper's
    background corruption of Table V, which ``python -m train.evaluate background`` measures)."""
    model.eval()
    noise = torch.Generator(device="cpu").manual_seed(cfg.seed + 1000 * epoch)
    probs, noisy_pred, labels = [], [], []
    for batch in loader:
        x, y = batch[0]["images"].to(device), batch[0]["labels"].reshape(-1).to(device)
        probs.append(F.softmax(model(x).float(), 1).cpu())
        corrupted = x + cfg.noise_std * torch.randn(x.shape, generator=noise).to(device)
        noisy_pred.append(model(corrupted).argmax(1).cpu())
        labels.append(y.cpu())
    loader.reset()
    probs, labels, noisy_pred = torch.cat(probs), torch.cat(labels), torch.cat(noisy_pred)
    ece, acc, conf, count = expected_calibration_error(probs, labels, cfg.ece_bins)
    return {"test_error": (probs.argmax(1) != labels).double().mean().item(), "ece": ece,
            "noisy_test_error": (noisy_pred != labels).double().mean().item()}, (acc, conf, count)


def train(cfg: TrainConfig) -> dict:
    cfg = resolved(checked(cfg))  # typed and validated; alpha: the method's own (alpha_by_method)
    rank, world = distributed()
    device = torch.device("cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    dali_device = "gpu" if device.type == "cuda" else "cpu"
    torch.set_num_threads(cfg.num_threads)
    out = Path(cfg.out_dir)
    # resume / afresh / overwrite decided (and the checkpoint verified) before any data loads or
    # any file is written: see checkpoint.prepare
    state = checkpoint.prepare(cfg, rank)

    method = resolve_method(cfg.method, cfg.mix_method)
    data = load_data(cfg)
    steps = steps_per_epoch(cfg, method, data, world)
    if steps == 0:
        raise ValueError(f"{data.train_size() // world} training samples per process are fewer than one "
                         f"batch of {method_batch_size(method, cfg.batch_size, cfg.k)} (method "
                         f"{method.name!r}): lower batch_size or use more data")
    if state is None:
        checkpoint.clear_for_fresh_run(out, rank)  # overwrite: nothing of the old run stays
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.num_classes, data.in_channels).to(device)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    optimizer = make_optimizer(cfg, model)
    # fp16 autocast on a GPU with a GradScaler; bf16 autocast (GPU or CPU) needs no scaler
    amp_dtype = torch.bfloat16 if cfg.amp_dtype == "bfloat16" else torch.float16
    use_amp = cfg.amp and (device.type == "cuda" or amp_dtype == torch.bfloat16)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and device.type == "cuda" and amp_dtype == torch.float16)
    non_blocking = cfg.non_blocking and device.type == "cuda"
    mix_generator = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    history, start_epoch, pipeline_state = [], 0, None
    ckpt_path = checkpoint.checkpoint_path(out, rank)
    if state is not None:  # verified and matching the config (checkpoint.prepare)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        mix_generator.set_state(state["mix_generator"])
        torch.set_rng_state(state["torch_rng"])
        history, start_epoch = state["history"], state["epoch"]
        pipeline_state = state.get("pipeline")  # None in checkpoints written before pipeline reuse
        if pipeline_state is None and start_epoch < cfg.epochs:
            print(f"checkpoint has no data pipeline state: the batches from epoch {start_epoch + 1} "
                  f"on differ from those of an uninterrupted run", flush=True)
        state = None  # the tensors now live in the model and optimiser
    manifold = (ManifoldMultiMix(model, cfg.manifold_layers, k=interpolations(method, cfg.k), alpha=cfg.alpha,
                                 lambda_sampling=cfg.lambda_sampling, lambda_scope=cfg.lambda_scope,
                                 generator=mix_generator)
                if method.manifold else contextlib.nullcontext())
    smoothing = label_smoothing(method, cfg.label_smoothing)
    if method.puzzle and data.mean is None:  # Puzzle Mix's border term needs the pixels' scale
        raise ValueError(f"method {cfg.method!r} needs the per-channel mean/std the inputs were normalised "
                         f"with (0..255 scale); dataset {cfg.dataset!r} has none (speech spectrograms are "
                         f"normalised per clip)")
    puzzle = (PuzzleMix(interpolations(method, cfg.k), alpha=cfg.alpha, solver=cfg.puzzle_solver,
                        clean_lam=cfg.clean_lam, mean=data.mean, std=data.std, generator=mix_generator,
                        lambda_scope=cfg.lambda_scope, t_size=cfg.puzzle_t_size,
                        beta=cfg.puzzle_beta, neigh_size=cfg.puzzle_neigh_size, workers=cfg.num_threads)
              if method.puzzle else
              SaliencyMix(interpolations(method, cfg.k), alpha=cfg.alpha, lambda_scope=cfg.lambda_scope,
                          generator=mix_generator)
              if method.saliency_box else
              CoMixup(data.num_classes, generator=mix_generator)  # the original's CIFAR settings
              if method.co_mixup else None)
    test_loader = eval_loader(cfg, data.test, data, dali_device)
    val_loader = eval_loader(cfg, data.val, data, dali_device) if data.val is not None else None
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out / "tensorboard"))
    calibration = None

    loader = None
    for epoch in range(start_epoch, cfg.epochs):
        # one pipeline for the run (a new one only where the image size changes), restored from
        # the checkpoint on resume: see data.TrainLoader
        loader = train_loader(cfg, method, data, epoch, rank, world, dali_device, reuse=loader,
                              state=pipeline_state)
        pipeline_state = None
        net.train()
        t0 = time.perf_counter()
        stats, interval = StepStats(device), StepStats(device)  # on the device: no host sync per step
        bar = tqdm(loader, total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not cfg.progress or rank != 0)
        with manifold:
            for step, batch in enumerate(bar):
                if isinstance(batch, dict):  # a pipeline without input mixing
                    x, y = batch["images"], batch["labels"].reshape(-1).long()  # readers give int32
                    y2, w = y, torch.zeros(len(y))
                else:
                    x, y, y2, w = batch
                x, y, y2, w = (t.to(device, non_blocking=non_blocking) for t in (x, y, y2, w))
                if x.dim() == 4:
                    x = x.contiguous(memory_format=memory_format)
                optimizer.zero_grad(set_to_none=True)
                lr = learning_rate(cfg, epoch + step / steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                if puzzle is not None:  # needs the model: saliency pass, then the masks
                    x, y, y2, w = puzzle(model, x, y, scaler=scaler)  # scales the clean loss
                with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    logits = net(x)
                if method.manifold:
                    y, y2, w = manifold.targets(y)
                loss = mixed_cross_entropy(logits.float(), y, y2, w, label_smoothing=smoothing)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                grad_sq = squared_grad_norm(model.parameters())
                if cfg.sync_every_step:  # benchmark only: the old loop's per-parameter host reads
                    grad_sq = torch.tensor(sum(float(p.grad.pow(2).sum()) for p in model.parameters()
                                               if p.grad is not None), dtype=torch.float64)
                scaler.step(optimizer)
                scaler.update()
                accuracy = mixed_accuracy(logits, y, y2, w)
                stats.add(loss, accuracy, grad_sq)
                interval.add(loss, accuracy, grad_sq)
                if cfg.sync_every_step or (step + 1) % cfg.log_every == 0:  # one host read per interval
                    shown = interval.read()
                    bar.set_postfix(loss=f"{shown['loss']:.3f}", acc=f"{shown['accuracy']:.3f}")
                    interval = StepStats(device)
        totals, seen = stats.read(), stats.steps
        epoch_time = time.perf_counter() - t0
        metrics, calibration = evaluate(model, test_loader, device, cfg, epoch)
        if val_loader is not None:  # model selection by validation error (speech, Table VII)
            val = evaluate(model, val_loader, device, cfg, epoch)[0]
            metrics.update(val_error=val["test_error"], val_ece=val["ece"])
        row = {"epoch": epoch + 1, "steps": seen, "train_loss": totals["loss"],
               "train_accuracy": totals["accuracy"], "mean_sq_grad_norm": totals["sq_grad_norm"],
               "epoch_seconds": epoch_time,
               "lr": learning_rate(cfg, epoch), **metrics}  # the lr of the epoch's first step
        history.append(row)
        if rank == 0:
            print(f"epoch {epoch + 1:3d}/{cfg.epochs}  loss {row['train_loss']:.4f}  "
                  f"test error {100 * row['test_error']:.2f}%  ECE {100 * row['ece']:.2f}%  "
                  f"noisy error {100 * row['noisy_test_error']:.2f}%  {epoch_time:.1f}s", flush=True)
            write_csv(history, out / "metrics.csv")
            for key, value in row.items():
                if key != "epoch":
                    writer.add_scalar(key, value, epoch + 1)
        checkpoint.save_atomic({
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "mix_generator": mix_generator.get_state(), "torch_rng": torch.get_rng_state(),
            "history": history, "epoch": epoch + 1, "config": asdict(cfg),
            "pipeline": loader.state()}, ckpt_path)

    if rank == 0:
        writer.close()
        if calibration is None:  # resumed after the last epoch: nothing was trained
            _, calibration = evaluate(model, test_loader, device, cfg, cfg.epochs)
        title = f"{cfg.method} (k={cfg.k}) on {cfg.dataset}"
        if history:
            plot_curves(history, out / "curves.png", title)
            reliability_diagram(*calibration, history[-1]["ece"], out / "reliability.png", title)
            checkpoint.write_atomic(json.dumps(summarise(history), indent=1).encode(), out / "results.json")
    return {"history": history, "model": model, "out_dir": out, "summary": summarise(history)}


def write_csv(history: list, path: Path) -> None:
    """The history as CSV, written atomically (checkpoint.write_atomic)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    checkpoint.write_atomic(text.getvalue().encode(), path)

