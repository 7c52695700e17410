"""Checkpoints that are never half-written, never silently wrong, and never the only copy.

* Every file is written to a temporary name in its folder (``.<name>.<pid>.tmp``), fsynced and
  renamed over its final name (atomic on POSIX). A kill leaves at most that temporary file, which
  :func:`remove_orphans` deletes when the next run starts.
* A checkpoint carries a header: a magic string, the SHA-256 of its payload and the payload's
  length. A truncated or corrupt one is named (:class:`CheckpointError`, a ValueError), never an
  EOFError or UnpicklingError from deep inside torch.
* The last two are kept: ``NAME`` (newest) and ``NAME.prev``; :func:`load_latest` falls back to
  the previous one, with a message, when the newest is missing or corrupt.
* Files are created with mode 0666 minus the umask (0644 under the usual umask 022), so that the
  group can read results, as any file the user writes.

For tests, the environment variable ``TRAIN_CHECKPOINT_KILL=<stage>[:<n>]`` makes the n-th
(default first) checkpoint save of the process SIGKILL itself at `stage`: ``partial`` (half the
bytes written), ``before_rename`` (written and fsynced, not yet renamed), ``between_renames``
(the old newest moved to ``.prev``, the new one not yet in place) or ``after_rename``.
"""
from __future__ import annotations

import hashlib
import io
import os
import signal
import struct
from pathlib import Path
from typing import Optional

import torch

MAGIC = b"MMXCKPT1"
HEADER = struct.Struct("<8s32sQ")  # magic, sha256 of the payload, payload length
REQUIRED_KEYS = ("model", "optimizer", "scaler", "mix_generator", "torch_rng", "history", "epoch",
                 "config")
# also saved: "pipeline", the training data pipeline's state between epochs (data.TrainLoader.state:
# DALI's serialized checkpoint, so that a resumed run continues the same batches); optional, as
# checkpoints written before the pipeline was reused across epochs lack it
KILL_STAGES = ("partial", "before_rename", "between_renames", "after_rename")
_saves = 0  # checkpoint saves by this process (for TRAIN_CHECKPOINT_KILL)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and why."""


def _kill_point(stage: str) -> None:
    spec = os.environ.get("TRAIN_CHECKPOINT_KILL", "")
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name == stage and _saves == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _write_temporary(data: bytes, path: Path) -> Path:
    """Writes `data` to a fresh temporary file beside `path`, fsynced; returns its name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    # O_EXCL: never follow or reuse a stale file; mode 0666 & ~umask, as any file the user writes
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            half = len(data) // 2
            f.write(data[:half])
            f.flush()
            _kill_point("partial")
            f.write(data[half:])
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(data: bytes, path: Path) -> None:
    """Writes `data` to `path` so that a reader (or a kill) sees the old file or the new one."""
    path = Path(path)
    if path.exists() and path.is_dir():
        raise ValueError(f"cannot write {path}: it is a folder")
    tmp = _write_temporary(data, path)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def previous(path: Path) -> Path:
    """The name the second-newest checkpoint is kept under."""
    return path.with_name(path.name + ".prev")


def save_atomic(state: dict, path: Path) -> None:
    """Saves `state` with its checksum as `path`, keeping the former `path` as `path`.prev."""
    global _saves
    _saves += 1
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    data = HEADER.pack(MAGIC, hashlib.sha256(payload).digest(), len(payload)) + payload
    tmp = _write_temporary(data, path)
    try:
        _kill_point("before_rename")
        if path.exists():
            os.replace(path, previous(path))
        _kill_point("between_renames")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)
    _kill_point("after_rename")


def load(path: Path) -> dict:
    """The state saved in `path`, verified against its checksum; CheckpointError (naming the file
    and the fault) for a missing, truncated, corrupt or incomplete file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read: {e.strerror or e}") from None
    if len(raw) < HEADER.size or raw[:len(MAGIC)] != MAGIC:
        raise CheckpointError(f"checkpoint {path} is not a checkpoint of this harness or is truncated "
                              f"({len(raw)} bytes, no '{MAGIC.decode()}' header)")
    _, digest, length = HEADER.unpack_from(raw)
    payload = raw[HEADER.size:]
    if len(payload) != length:
        raise CheckpointError(f"checkpoint {path} is truncated: {len(payload)} of {length} bytes")
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"checkpoint {path} is corrupt: its SHA-256 does not match the one "
                              f"saved with it")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
    except Exception as e:  # the checksum matched: a file from an incompatible torch version
        raise CheckpointError(f"checkpoint {path} cannot be unpickled ({type(e).__name__}: {e})") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing} (written by another program?)")
    return state


def load_latest(path: Path) -> tuple[Optional[dict], Optional[Path], list]:
    """(state, file it came from, notes) of the newest usable of `path` and `path`.prev; (None,
    None, notes) where neither exists. Notes say what was passed over and why; CheckpointError
    where files exist but none is usable."""
    path = Path(path)
    notes, errors = [], []
    for candidate in (path, previous(path)):
        if not candidate.exists():
            if candidate == path and previous(path).exists():
                notes.append(f"checkpoint {path} is missing (a save was interrupted)")
            continue
        try:
            state = load(candidate)
        except CheckpointError as e:
            errors.append(str(e))
            notes.append(f"{e}; trying the previous one")
            continue
        return state, candidate, notes
    if errors:
        raise CheckpointError("no usable checkpoint: " + "; ".join(errors))
    return None, None, notes


def orphans(folder: Path, name: str) -> list:
    """Temporary files that a killed save of `name` (in `folder`) left behind."""
    folder = Path(folder)
    return sorted(folder.glob(f".{name}.*.tmp")) if folder.is_dir() else []


def remove_orphans(folder: Path, names) -> list:
    """Deletes the temporary files of killed saves of `names`; returns those it deleted."""
    removed = []
    for name in names:
        for tmp in orphans(folder, name):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


# ---------------------------------------------------------------------------------------------
# A run's out_dir: what resuming, starting afresh and overwriting mean.

SHARED_RESULTS = ("metrics.csv", "results.json", "curves.png", "reliability.png", "tensorboard")
WRITTEN_BY_RANK0 = ("metrics.csv", "results.json", "config.yaml")


def checkpoint_path(out: Path, rank: int) -> Path:
    """The newest checkpoint of data-parallel rank `rank` in out_dir `out`."""
    return Path(out) / f"checkpoint_rank{rank}.pt"


def results_in(out: Path) -> list:
    """The files and folders of an earlier run's results in `out` (config.yaml alone is none)."""
    out = Path(out)
    if not out.is_dir():
        return []
    found = [out / name for name in SHARED_RESULTS if (out / name).exists()]
    return found + sorted(out.glob("checkpoint_rank*.pt")) + sorted(out.glob("checkpoint_rank*.pt.prev"))


def prepare(cfg, rank: int = 0) -> Optional[dict]:
    """Decides, before any data loads or file is written, how the run of `cfg` starts in its
    out_dir; returns the checkpoint state to continue, or None to start afresh.

    Deletes the temporary files of killed saves. resume: the newest usable checkpoint (the
    previous one where the newest is corrupt, with a message), an error where there is none, where
    its config differs in any key but RESUMABLE_CHANGES (every such key named), or where `epochs`
    is below its epoch. resume_if_exists: the same where a checkpoint exists, else afresh. Afresh:
    an error where out_dir holds an earlier run's results, unless `overwrite`."""
    from .config import RESUMABLE_CHANGES, config_differences

    out = Path(cfg.out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"config key 'out_dir': {out} is a file; expected a folder")
    path = checkpoint_path(out, rank)
    removed = remove_orphans(out, [path.name] + (list(WRITTEN_BY_RANK0) if rank == 0 else []))
    if removed and rank == 0:
        print(f"removed {len(removed)} temporary file(s) of an interrupted save: "
              f"{', '.join(p.name for p in removed)}", flush=True)
    if cfg.resume or cfg.resume_if_exists:
        state, source, notes = load_latest(path)
        for note in notes:
            print(note, flush=True)
        if state is not None:
            differences = config_differences(state["config"], cfg)
            if differences:
                raise ValueError(
                    f"cannot resume from {source}: it was saved by a run with another config: "
                    + "; ".join(f"{key!r} was {old!r}, now {new!r}" for key, old, new in differences)
                    + f". Only {', '.join(RESUMABLE_CHANGES[:-3])} may change on resume; pass the "
                    f"saved values, or start a new run in another out_dir")
            if cfg.epochs < state["epoch"]:
                raise ValueError(f"config key 'epochs': {cfg.epochs} is below the epoch of checkpoint "
                                 f"{source} ({state['epoch']}); pass epochs >= {state['epoch']}")
            if source != path and path.exists():  # set the corrupt newest aside: never rotated to .prev
                os.replace(path, path.with_name(path.name + ".corrupt"))
                print(f"kept the unusable {path.name} as {path.name}.corrupt", flush=True)
            if rank == 0:
                print(f"resuming from {source} at epoch {state['epoch']}", flush=True)
            return state
        if not cfg.resume_if_exists:
            raise FileNotFoundError(f"resume: out_dir {out} holds no checkpoint ({path.name} or "
                                    f"{previous(path).name}); start without resume, or pass "
                                    f"resume_if_exists (--resume-if-exists) to start afresh when there is none")
        print(f"no checkpoint in {out}: starting afresh", flush=True)
        if results_in(out) and _same_run(out, cfg):  # killed before its first checkpoint
            return None
    earlier = results_in(out)
    if earlier and not cfg.overwrite:
        raise FileExistsError(f"out_dir {out} holds the results of an earlier run "
                              f"({', '.join(p.name for p in earlier[:6])}); resume it (--resume), "
                              f"replace it (--overwrite) or choose another out_dir")
    return None


def _same_run(out: Path, cfg) -> bool:
    """True where `out`/config.yaml was written by a run of `cfg` (up to RESUMABLE_CHANGES): its
    partial results may be replaced by resume_if_exists. ValueError naming the differences."""
    import yaml

    from .config import config_differences

    try:
        saved = yaml.safe_load((out / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return False
    differences = config_differences(saved if isinstance(saved, dict) else {}, cfg)
    if differences:
        raise ValueError(f"resume_if_exists: out_dir {out} holds partial results of a run with "
                         f"another config (" + "; ".join(f"{k!r} was {a!r}, now {b!r}"
                                                         for k, a, b in differences)
                         + "); choose another out_dir or pass overwrite")
    return True


def clear_for_fresh_run(out: Path, rank: int = 0) -> None:
    """Deletes what an earlier run left in `out` (its results and this rank's checkpoints), so that
    an overwritten run is never mixed with or resumed from the old one."""
    import shutil

    out = Path(out)
    path = checkpoint_path(out, rank)
    for stale in (path, previous(path)):
        stale.unlink(missing_ok=True)
    if rank == 0:
        for name in SHARED_RESULTS:
            target = out / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
