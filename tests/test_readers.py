"""The readers of pipelines/ as users feed them: file lists with labels as written (gaps, large
values), class folders with symlinks (to files, to folders, loops), WAV files in every format the
pipeline's decoder (DALI's fn.decoders.audio) accepts, verified by that same decoder."""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest

import pipelines
from pipelines.folders import list_class_folder, read_file_list
from pipelines.speech import list_audio_folder, verify_wav

EXT = (".jpg",)


def test_file_list_labels_with_gaps_and_large_values(tmp_path):
    for name in "abcd":
        (tmp_path / f"{name}.jpg").write_bytes(b"x")
    (tmp_path / "list.txt").write_text("a.jpg 3\nb.jpg 10000000\n\nc.jpg 3\nd.jpg 7\n")
    listed = read_file_list(tmp_path / "list.txt")
    assert listed.classes == ["3", "7", "10000000"]  # the labels that occur, as written
    assert listed.labels == [0, 2, 0, 1]
    assert [listed.classes[i] for i in listed.labels] == ["3", "10000000", "3", "7"]


def test_file_list_bad_label_is_named(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "list.txt").write_text("a.jpg -2\n")
    with pytest.raises(ValueError, match=r"list.txt:1: expected '<path> <label >= 0>'; got 'a.jpg -2'"):
        read_file_list(tmp_path / "list.txt")


def make_tree(root: Path) -> None:
    """a/ holds x.jpg, a link to it, a link to a folder outside root and a loop back to a/;
    b/ holds y.jpg and a loop to root."""
    (root / "data/a").mkdir(parents=True)
    (root / "data/b").mkdir()
    (root / "outside").mkdir()
    (root / "data/a/x.jpg").write_bytes(b"x")
    (root / "outside/z.jpg").write_bytes(b"z")
    (root / "data/b/y.jpg").write_bytes(b"y")
    os.symlink(root / "data/a/x.jpg", root / "data/a/x_again.jpg")
    os.symlink(root / "outside", root / "data/a/more")
    os.symlink(root / "data/a", root / "data/a/loop")
    os.symlink(root / "data/b", root / "data/b/self")


def test_symlinks_are_followed_once_without_loops(tmp_path):
    make_tree(tmp_path)
    listed = list_class_folder(tmp_path / "data", EXT)
    assert listed.classes == ["a", "b"]
    real = [os.path.realpath(f) for f in listed.files]
    assert len(real) == len(set(real)) == 3  # x, z (through the linked folder), y: each once
    by_class = {os.path.basename(r): listed.classes[l] for r, l in zip(real, listed.labels)}
    assert by_class == {"x.jpg": "a", "z.jpg": "a", "y.jpg": "b"}


def test_a_file_in_two_classes_is_refused_naming_both(tmp_path):
    make_tree(tmp_path)
    os.symlink(tmp_path / "data/a/x.jpg", tmp_path / "data/b/stolen.jpg")
    with pytest.raises(ValueError, match=r"x.jpg is in class 'a' .* and in class 'b' \(as .*stolen.jpg\)"):
        list_class_folder(tmp_path / "data", EXT)


def test_a_class_folder_that_is_a_symlink_is_read(tmp_path):
    make_tree(tmp_path)
    os.symlink(tmp_path / "outside", tmp_path / "data/c")
    os.unlink(tmp_path / "data/a/more")  # z.jpg now belongs to class c only
    listed = list_class_folder(tmp_path / "data", EXT)
    assert listed.classes == ["a", "b", "c"] and listed.labels.count(2) == 1


# ----------------------------------------------------------------------------------------------
# WAV files: written by hand, byte by byte, in the formats of the RIFF/WAVE specification

def wav_bytes(samples: np.ndarray, rate: int = 16000, fmt: str = "pcm16") -> bytes:
    """A mono WAV: fmt "pcm16", "float32" (WAVE_FORMAT_IEEE_FLOAT) or "extensible" (PCM 16 in
    WAVE_FORMAT_EXTENSIBLE, with the PCM sub-format GUID)."""
    if fmt == "float32":
        data, tag, bits = samples.astype("<f4").tobytes(), 3, 32
    else:
        data, tag, bits = (samples * 32767).astype("<i2").tobytes(), 1, 16
    block = bits // 8
    if fmt == "extensible":
        guid = struct.pack("<IHH8s", 1, 0x0000, 0x0010, bytes.fromhex("800000aa00389b71"))
        chunk = struct.pack("<HHIIHHHHI", 0xFFFE, 1, rate, rate * block, block, bits, 22, bits, 4) + guid
    else:
        chunk = struct.pack("<HHIIHH", tag, 1, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(chunk)) + chunk
    if fmt == "float32":
        body += b"fact" + struct.pack("<II", 4, len(samples))
    body += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.fixture
def wav_folder(tmp_path):
    tone = (0.5 * np.sin(np.linspace(0, 200 * np.pi, 8000))).astype(np.float32)
    for word, fmt in (("yes", "pcm16"), ("no", "float32"), ("up", "extensible")):
        (tmp_path / word).mkdir()
        for i in range(2):
            (tmp_path / word / f"{i}.wav").write_bytes(wav_bytes(tone * (i + 1) / 2, fmt=fmt))
    return tmp_path


@pytest.mark.parametrize("fmt", ["pcm16", "float32", "extensible"])
def test_every_wav_format_the_decoder_reads_is_accepted(tmp_path, fmt):
    path = tmp_path / "clip.wav"
    path.write_bytes(wav_bytes(np.zeros(1600, np.float32) + 0.25, fmt=fmt))
    assert verify_wav(str(path)) is None


@pytest.mark.parametrize("content, match", [
    (b"RIFF\x10\x00\x00\x00WAVEjunkjunk", r"."),
    (b"not a wav at all" * 10, r"."),
    (b"", r"empty file"),
])
def test_a_bad_wav_is_rejected_with_the_decoders_reason(tmp_path, content, match):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    assert verify_wav(str(path)) is not None


def test_audio_folder_verification_names_the_bad_file_and_trains_on_the_rest(wav_folder):
    (wav_folder / "up" / "broken.wav").write_bytes(wav_bytes(np.zeros(800, np.float32))[:30])
    with pytest.raises(ValueError, match=r"audio file .*up/broken.wav cannot be decoded"):
        list_audio_folder(wav_folder)
    listed = list_audio_folder(wav_folder, skip_corrupt=True)
    assert len(listed.files) == 6 and [os.path.basename(p) for p, _ in listed.skipped] == ["broken.wav"]
    pipe = pipelines.speech_train_pipeline(listed, batch_size=6, mix=False, training=False, num_threads=1)
    pipe.build()
    maps, labels = pipe.run()
    assert maps.as_array().shape == (6, 1, 161, 101) and np.isfinite(maps.as_array()).all()
