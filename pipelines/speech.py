"""Speech pipeline: a folder of WAV files per class -> decode, resample to 16 kHz, fixed 1 s ->
spectrogram -> multimix on the 2-D time-frequency map (the multi-mix paper's speech experiment,
Sec. IV-G, mixes spectrograms), and the train / validation / test split of Google Commands.

The default features are those of mixup's speech experiment, whose code follows GCommandsPytorch
(github.com/adiyoss/GCommandsPytorch, gcommand_loader.py, ``spect_loader``): an STFT with a 0.02 s
Hamming window (n_fft = 320 at 16 kHz) and a 0.01 s hop, magnitude, log(1 + |STFT|), 101 frames,
then one mean / std normalisation per spectrogram: (1, 161, 101). ``features="logmel"`` gives 40
log-mel bands instead.
"""
from __future__ import annotations

from pathlib import Path
from functools import partial
from typing import Callable, Optional, Union

import numpy as np
from nvidia.dali import fn, math as dmath, pipeline_def, types
from nvidia.dali.pipeline import Pipeline

import dali_multimix

from .folders import DaliVerifier, FileList, list_class_folder
from .sharding import check_shard

SAMPLE_RATE = 16000
AUDIO_EXTENSIONS = (".wav",)
FEATURES = ("stft", "logmel")
# gcommand_loader.py: window_size=.02, window_stride=.01, window_type='hamming', normalize=True,
# max_len=101; n_fft = int(sr * window_size), hop_length = int(sr * window_stride)
STFT_WINDOW = int(SAMPLE_RATE * 0.02)   # 320 samples: 161 frequency bins
STFT_HOP = int(SAMPLE_RATE * 0.01)      # 160 samples: 101 frames in 1 s (centred windows)
FRAMES = 101


def feature_shape(features: str = "stft", n_mels: int = 40) -> tuple:
    """(C, H, W) of one spectrogram: (1, 161, 101) for "stft", (1, n_mels, 101) for "logmel"."""
    if features not in FEATURES:
        raise ValueError(f"features must be one of {FEATURES}; got {features!r}")
    return (1, STFT_WINDOW // 2 + 1 if features == "stft" else n_mels, FRAMES)


def decode_audio(encoded):
    """The pipeline's audio decoder: any format fn.decoders.audio reads (PCM, float and
    WAVE_FORMAT_EXTENSIBLE WAV, FLAC, OGG), downmixed to mono float at SAMPLE_RATE."""
    audio, _ = fn.decoders.audio(encoded, dtype=types.FLOAT, downmix=True, sample_rate=SAMPLE_RATE)
    return audio


_verify_audio = None


def verify_wav(path: str) -> Optional[str]:
    """None if `path` decodes (with at least one sample) by decode_audio, the decoder the
    pipeline uses (folders.DaliVerifier), else DALI's reason."""
    global _verify_audio
    if _verify_audio is None:
        _verify_audio = DaliVerifier(decode_audio)
    return _verify_audio(path)


def list_audio_folder(root: Union[str, Path], *, verify: bool = True,
                      skip_corrupt: bool = False) -> FileList:
    """Files and labels of `root`/<class>/<clip>.wav (see folders.list_class_folder)."""
    return list_class_folder(root, AUDIO_EXTENSIONS, verify_wav if verify else None,
                             skip_corrupt=skip_corrupt, kind="audio")


def hamming(n: int) -> list:
    """The periodic Hamming window of librosa's / scipy's window='hamming' (fftbins=True)."""
    return np.hamming(n + 1)[:-1].astype(np.float32).tolist()


def speech_train_pipeline(file_list: FileList, *, batch_size: int, k: int = 5, alpha: float = 1.0,
                          mode: str = "mixup", mix: bool = True, training: bool = True,
                          features: str = "stft", n_mels: int = 40, seconds: float = 1.0,
                          shard_id: int = 0, num_shards: int = 1, seed: int = 0,
                          num_threads: int = 2, lambda_scope: str = "batch",
                          mixer: Optional[Callable] = None, enable_checkpointing: bool = False,
                          checkpoint: Optional[str] = None) -> Pipeline:
    """Outputs (spectrograms (B, K, *feature_shape), labels, partner_labels, weights), or
    (spectrograms (B, *feature_shape), labels) with mix=False; layout CHW with H = frequency and
    W = 10 ms frames. features: "stft" (default; GCommandsPytorch's normalised log(1 + |STFT|),
    161 x 101) or "logmel" (n_mels log-mel bands). `mixer(maps, labels)` replaces the multimix
    step. Use reader_name="Reader" in the iterator. enable_checkpointing, checkpoint: DALI
    checkpointing (the reader, the random operators and multimix restore their state from
    ``checkpoint``)."""
    check_shard(shard_id, num_shards)
    feature_shape(features, n_mels)
    if mode not in ("mixup", "cutmix"):
        raise ValueError(f"mode must be 'mixup' or 'cutmix' for spectrograms; got {mode!r}")
    if mixer is None and mix:
        mixer = partial(dali_multimix.add_multimix, k=k, alpha=alpha, mode=mode,
                        lambda_scope=lambda_scope)
    length = int(round(seconds * SAMPLE_RATE))

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, seed=seed, device_id=None,
                  enable_checkpointing=enable_checkpointing, checkpoint=checkpoint)
    def pipe():
        encoded, labels = fn.readers.file(files=list(file_list.files), labels=list(file_list.labels),
                                          shard_id=shard_id, num_shards=num_shards,
                                          pad_last_batch=True, shuffle_after_epoch=training,
                                          seed=seed, name="Reader")
        audio = decode_audio(encoded)
        if features == "stft":  # gcommand_loader.py spect_loader, on the whole clip
            # librosa.stft(n_fft=320, hop_length=160, win_length=320, window='hamming'), centred
            # (reflect-padded) windows; magphase -> |STFT| (power 1); np.log1p
            spec = fn.spectrogram(audio, nfft=STFT_WINDOW, window_length=STFT_WINDOW,
                                  window_step=STFT_HOP, window_fn=hamming(STFT_WINDOW), power=1,
                                  center_windows=True, reflect_padding=True)
            spec = dmath.log(spec + 1.0)
            # "make all spects with the same dims": zero frames appended / cut to max_len = 101
            spec = fn.slice(spec, start=[0], shape=[FRAMES], axes=[1], out_of_bounds_policy="pad",
                            fill_values=0.0)
            # z-score over the whole spectrogram with torch's unbiased std (spect.std())
            norm = fn.normalize(spec, ddof=1, epsilon=1e-12)
        else:
            audio = fn.slice(audio, start=[0], shape=[length], axes=[0],
                             out_of_bounds_policy="pad", fill_values=0.0)
            spec = fn.spectrogram(audio, nfft=512, window_length=400, window_step=160)
            mel = fn.mel_filter_bank(spec, sample_rate=SAMPLE_RATE, nfilter=n_mels)
            db = fn.to_decibels(mel, multiplier=10.0, cutoff_db=-80.0)
            norm = fn.normalize(db, epsilon=1e-5)
        maps = fn.reshape(fn.expand_dims(norm, axes=[0]), layout="CHW")
        return (maps, labels) if mixer is None else mixer(maps, labels)

    return pipe()


def _relabel(named: list, words: list) -> FileList:
    """FileList of (path, word) pairs, labels indexing `words`."""
    return FileList([f for f, _ in named], [words.index(w) for _, w in named], words, [])


def speech_commands_split(root: Union[str, Path], *, seed: int = 0,
                          fractions: tuple = (0.8, 0.1, 0.1)) -> tuple:
    """(train, validation, test) FileLists of a speech-commands folder, by the first that applies:

    * ``root``/train, ``root``/valid (or val), ``root``/test, each of <word>/<clip>.wav (the layout
      GCommandsPytorch's make_dataset.py writes from the official lists);
    * ``root``/<word>/<clip>.wav with the official ``validation_list.txt`` and ``testing_list.txt``
      (Google Speech Commands as distributed; folders starting with "_", such as
      _background_noise_, are not words);
    * otherwise a seeded random split of ``root``/<word>/<clip>.wav by `fractions`.
    Labels index the sorted word list of the whole set in every split."""
    root = Path(root)
    val_dir = next((root / d for d in ("valid", "val") if (root / d).is_dir()), None)
    if (root / "train").is_dir() and val_dir is not None and (root / "test").is_dir():
        parts = [list_audio_folder(d, verify=False) for d in (root / "train", val_dir, root / "test")]
        if any(p.classes != parts[0].classes for p in parts):
            raise ValueError(f"{root}: train, {val_dir.name} and test must hold the same word folders; "
                             f"got {[p.classes for p in parts]}")
        return tuple(parts)
    every = list_audio_folder(root, verify=False)
    words = [c for c in every.classes if not c.startswith("_")]
    named = [(f, every.classes[lab]) for f, lab in zip(every.files, every.labels)
             if not every.classes[lab].startswith("_")]
    lists = [root / "validation_list.txt", root / "testing_list.txt"]
    if all(p.is_file() for p in lists):
        val, test = ({str(root / line.strip()) for line in p.read_text().splitlines() if line.strip()}
                     for p in lists)
        pick = lambda keep: _relabel([(f, c) for f, c in named if keep(f)], words)  # noqa: E731
        return pick(lambda f: f not in val and f not in test), pick(val.__contains__), pick(test.__contains__)
    order = np.random.default_rng(seed).permutation(len(named))
    a = int(round(fractions[0] * len(order)))
    b = a + int(round(fractions[1] * len(order)))
    pick = lambda idx: _relabel([named[i] for i in sorted(idx)], words)  # noqa: E731
    return pick(order[:a]), pick(order[a:b]), pick(order[b:])
