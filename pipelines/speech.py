"""Speech pipeline: a folder of WAV files per class -> decode, resample to 16 kHz, fixed 1 s ->
mel spectrogram -> decibels -> normalisation -> multimix on the 2-D time-frequency map (the
multi-mix paper's speech experiment uses mixup and cutmix on spectrograms)."""
from __future__ import annotations

import wave
from pathlib import Path
from functools import partial
from typing import Callable, Optional, Union

from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.pipeline import Pipeline

import dali_multimix

from .folders import FileList, list_class_folder
from .sharding import check_shard

SAMPLE_RATE = 16000
AUDIO_EXTENSIONS = (".wav",)


def verify_wav(path: str) -> Optional[str]:
    """None if `path` is a readable PCM WAV with at least one frame, else why not."""
    try:
        with wave.open(path, "rb") as w:
            if w.getnframes() == 0:
                return "no audio frames"
            w.readframes(w.getnframes())
    except (wave.Error, EOFError, OSError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def list_audio_folder(root: Union[str, Path], *, verify: bool = True,
                      skip_corrupt: bool = False) -> FileList:
    """Files and labels of `root`/<class>/<clip>.wav (see folders.list_class_folder)."""
    return list_class_folder(root, AUDIO_EXTENSIONS, verify_wav if verify else None,
                             skip_corrupt=skip_corrupt, kind="audio")


def speech_train_pipeline(file_list: FileList, *, batch_size: int, k: int = 5, alpha: float = 1.0,
                          mode: str = "mixup", mix: bool = True, training: bool = True,
                          n_mels: int = 40, seconds: float = 1.0, shard_id: int = 0,
                          num_shards: int = 1, seed: int = 0, num_threads: int = 2,
                          mixer: Optional[Callable] = None) -> Pipeline:
    """Outputs (spectrograms (B, K, 1, n_mels, 101), labels, partner_labels, weights), or
    (spectrograms (B, 1, n_mels, 101), labels) with mix=False; layout CHW with H = mel bands and
    W = 10 ms frames. `mixer(maps, labels)` replaces the multimix step. Use reader_name="Reader"
    in the iterator."""
    check_shard(shard_id, num_shards)
    if mode not in ("mixup", "cutmix"):
        raise ValueError(f"mode must be 'mixup' or 'cutmix' for spectrograms; got {mode!r}")
    if mixer is None and mix:
        mixer = partial(dali_multimix.add_multimix, k=k, alpha=alpha, mode=mode)
    length = int(round(seconds * SAMPLE_RATE))

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, seed=seed, device_id=None)
    def pipe():
        encoded, labels = fn.readers.file(files=list(file_list.files), labels=list(file_list.labels),
                                          shard_id=shard_id, num_shards=num_shards,
                                          pad_last_batch=True, shuffle_after_epoch=training,
                                          seed=seed, name="Reader")
        audio, _ = fn.decoders.audio(encoded, dtype=types.FLOAT, downmix=True,
                                     sample_rate=SAMPLE_RATE)
        audio = fn.slice(audio, start=[0], shape=[length], axes=[0], out_of_bounds_policy="pad",
                         fill_values=0.0)
        spec = fn.spectrogram(audio, nfft=512, window_length=400, window_step=160)
        mel = fn.mel_filter_bank(spec, sample_rate=SAMPLE_RATE, nfilter=n_mels)
        db = fn.to_decibels(mel, multiplier=10.0, cutoff_db=-80.0)
        norm = fn.normalize(db, epsilon=1e-5)
        maps = fn.reshape(fn.expand_dims(norm, axes=[0]), layout="CHW")
        return (maps, labels) if mixer is None else mixer(maps, labels)

    return pipe()
