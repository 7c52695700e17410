"""The speech pipeline over WAVs synthesised offline with espeak-ng and flite: GCommandsPytorch's
normalised STFT spectrogram (mixup's speech setup), the log-mel option, the train / validation /
test split."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

import pipelines
from dali_multimix.torch import MultimixIterator
from pipelines.speech_data import WORDS, variants


@pytest.fixture(scope="module")
def speech_root(tmp_path_factory):
    return pipelines.synthesize_speech_commands(tmp_path_factory.mktemp("speech"),
                                                words=("yes", "no", "stop"))


def test_synthesised_set(speech_root):
    fl = pipelines.list_audio_folder(speech_root)
    assert fl.classes == ["no", "stop", "yes"]
    assert len(fl.files) == 3 * len(variants())
    with wave.open(fl.files[0]) as w:
        assert w.getnframes() > 1000 and w.getsampwidth() == 2
    assert set(WORDS) >= set(fl.classes)


@pytest.mark.parametrize("mode", ["mixup", "cutmix"])
def test_spectrogram_shape_and_labels(speech_root, mode):
    fl = pipelines.list_audio_folder(speech_root)
    pipe = pipelines.speech_train_pipeline(fl, batch_size=8, k=3, mode=mode)
    pipe.build()
    it = MultimixIterator(DALIGenericIterator(pipe, ["images", "labels", "partner_labels", "weights"],
                                              reader_name="Reader",
                                              last_batch_policy=LastBatchPolicy.PARTIAL))
    rows = 0
    for b in it:
        assert b.images.shape[1:] == (1, 161, 101)  # 161 STFT bins (n_fft 320) x 101 frames of 10 ms
        assert np.isfinite(b.images.numpy()).all()
        assert set(b.labels.tolist()) <= {0, 1, 2}
        rows += b.images.shape[0]
    assert rows == len(fl.files) * 3


def test_spectrograms_are_normalised_and_labelled_by_folder(speech_root):
    fl = pipelines.list_audio_folder(speech_root)
    pipe = pipelines.speech_train_pipeline(fl, batch_size=len(fl.files), mix=False, training=False)
    pipe.build()
    maps, labels = [np.array(t.as_tensor()) for t in pipe.run()]
    assert maps.shape == (len(fl.files), 1, 161, 101)
    np.testing.assert_allclose(maps.mean(axis=(1, 2, 3)), 0, atol=1e-3)
    np.testing.assert_allclose(maps.std(axis=(1, 2, 3)), 1, atol=1e-2)
    assert labels.ravel().tolist() == fl.labels  # no shuffling when training=False


def test_corrupt_wav_is_named_or_skipped(speech_root, tmp_path):
    for word in ("yes", "no"):
        (tmp_path / word).mkdir()
        src = next((speech_root / word).glob("*.wav"))
        (tmp_path / word / "ok.wav").write_bytes(src.read_bytes())
    (tmp_path / "no" / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(ValueError, match=r"audio file .*/no/bad.wav cannot be decoded"):
        pipelines.list_audio_folder(tmp_path)
    fl = pipelines.list_audio_folder(tmp_path, skip_corrupt=True)
    assert len(fl.files) == 2 and len(fl.skipped) == 1


def test_spectrogram_mode_must_be_mixup_or_cutmix(speech_root):
    fl = pipelines.list_audio_folder(speech_root)
    with pytest.raises(ValueError, match=r"mode must be 'mixup' or 'cutmix' for spectrograms; got 'fmix'"):
        pipelines.speech_train_pipeline(fl, batch_size=2, mode="fmix")


def gcommand_spect(path: str) -> np.ndarray:
    """GCommandsPytorch's gcommand_loader.py spect_loader (window_size=.02, window_stride=.01,
    window_type='hamming', normalize=True, max_len=101) in numpy: librosa.stft's centred,
    reflect-padded frames and periodic Hamming window, |STFT|, log1p, zero frames to 101,
    z-score with torch's unbiased std."""
    with wave.open(path) as w:
        y = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float64) / 32768
    n_fft, hop = 320, 160
    y = np.pad(y, n_fft // 2, mode="reflect")
    window = np.hamming(n_fft + 1)[:-1]
    frames = np.stack([y[i * hop:i * hop + n_fft] * window for i in range(1 + (len(y) - n_fft) // hop)])
    spect = np.log1p(np.abs(np.fft.rfft(frames, axis=1))).T
    spect = np.hstack([spect, np.zeros((spect.shape[0], max(0, 101 - spect.shape[1])))])[:, :101]
    t = torch.from_numpy(spect)
    return ((t - t.mean()) / t.std()).numpy()


def test_stft_features_match_gcommandspytorch(tmp_path):
    """16 kHz clips (Google Commands' rate) shorter than, exactly and longer than 1 s: every value
    as the loader of mixup's speech experiment computes it."""
    files = []
    rng = np.random.default_rng(0)
    for n in (11000, 16000, 17500):
        t = np.arange(n) / 16000
        x = 6000 * np.sin(2 * np.pi * (200 + 3000 * t) * t) + rng.normal(0, 300, n)
        files.append(str(tmp_path / f"{n}.wav"))
        with wave.open(files[-1], "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(x.astype(np.int16).tobytes())
    pipe = pipelines.speech_train_pipeline(pipelines.FileList(files, [0] * len(files), ["w"], []),
                                           batch_size=len(files), mix=False, training=False)
    pipe.build()
    maps = np.array(pipe.run()[0].as_tensor())
    for got, path in zip(maps, files):
        np.testing.assert_allclose(got[0], gcommand_spect(path), atol=1e-4, err_msg=path)


def test_logmel_features_are_an_option(speech_root):
    fl = pipelines.list_audio_folder(speech_root)
    pipe = pipelines.speech_train_pipeline(fl, batch_size=4, mix=False, training=False, features="logmel")
    pipe.build()
    assert np.array(pipe.run()[0].as_tensor()).shape == (4, 1, 40, 101)
    assert pipelines.feature_shape("logmel", 40) == (1, 40, 101) and pipelines.feature_shape() == (1, 161, 101)
    with pytest.raises(ValueError, match=r"features must be one of \('stft', 'logmel'\); got 'mfcc'"):
        pipelines.speech_train_pipeline(fl, batch_size=2, features="mfcc")


def test_split_by_folders_lists_or_seed(speech_root, tmp_path):
    fl = pipelines.list_audio_folder(speech_root)
    # a seeded 80 / 10 / 10 split when the folder has neither
    train, val, test = pipelines.speech_commands_split(speech_root, seed=0)
    assert (len(train.files), len(val.files), len(test.files)) == (58, 7, 7)
    assert set(train.files) | set(val.files) | set(test.files) == set(fl.files)
    assert not set(train.files) & set(test.files) and not set(val.files) & set(test.files)
    # the official lists (paths relative to the root); "_background_noise_" is not a word
    (speech_root / "_background_noise_").mkdir(exist_ok=True)
    (speech_root / "_background_noise_" / "noise.wav").write_bytes(Path(fl.files[0]).read_bytes())
    rel = [str(Path(f).relative_to(speech_root)) for f in fl.files]
    (speech_root / "validation_list.txt").write_text("\n".join(rel[:5]) + "\n")
    (speech_root / "testing_list.txt").write_text("\n".join(rel[5:12]) + "\n")
    try:
        train, val, test = pipelines.speech_commands_split(speech_root)
        assert val.files == sorted(fl.files[:5]) or sorted(val.files) == sorted(fl.files[:5])
        assert sorted(test.files) == sorted(fl.files[5:12]) and len(train.files) == len(fl.files) - 12
        assert train.classes == ["no", "stop", "yes"]
        assert all(Path(f).parent.name == train.classes[lab] for f, lab in zip(train.files, train.labels))
    finally:
        for extra in ("validation_list.txt", "testing_list.txt", "_background_noise_/noise.wav"):
            (speech_root / extra).unlink()
        (speech_root / "_background_noise_").rmdir()
    # GCommandsPytorch's train/ valid/ test/ folders
    for i, f in enumerate(fl.files):
        dest = tmp_path / ("train", "train", "valid", "test")[i % 4] / Path(f).parent.name / Path(f).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(Path(f).read_bytes())
    train, val, test = pipelines.speech_commands_split(tmp_path)
    assert (len(train.files), len(val.files), len(test.files)) == (36, 18, 18)
    assert val.classes == test.classes == ["no", "stop", "yes"]
    for word in (tmp_path / "test" / "yes").iterdir():
        word.unlink()
    (tmp_path / "test" / "yes").rmdir()
    with pytest.raises(ValueError, match=r"train, valid and test must hold the same word folders"):
        pipelines.speech_commands_split(tmp_path)
