"""The speech pipeline over WAVs synthesised offline with espeak-ng and flite."""
from __future__ import annotations

import wave

import numpy as np
import pytest
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
        assert b.images.shape[1:] == (1, 40, 101)  # 40 mel bands x 101 frames of 10 ms = 1 s
        assert np.isfinite(b.images.numpy()).all()
        assert set(b.labels.tolist()) <= {0, 1, 2}
        rows += b.images.shape[0]
    assert rows == len(fl.files) * 3


def test_spectrograms_are_normalised_and_labelled_by_folder(speech_root):
    fl = pipelines.list_audio_folder(speech_root)
    pipe = pipelines.speech_train_pipeline(fl, batch_size=len(fl.files), mix=False, training=False)
    pipe.build()
    maps, labels = [np.array(t.as_tensor()) for t in pipe.run()]
    assert maps.shape == (len(fl.files), 1, 40, 101)
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
