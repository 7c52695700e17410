"""A small speech-commands-style data set, synthesised offline with Debian's espeak-ng and flite
(several voices, speeds and pitches): `root`/<word>/<variant>.wav. Nothing is downloaded."""
from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path
from typing import Sequence, Union

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
ESPEAK_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en+f3", "en+m3")
ESPEAK_SPEEDS = (130, 175)
ESPEAK_PITCHES = (35, 65)
FLITE_VOICES = ("kal", "awb", "rms", "slt")


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise FileNotFoundError(f"{tool} is not installed: apt-get install espeak-ng flite (make setup "
                                f"does, where apt-get exists)")
    return path


def variants() -> list:
    """(engine, voice, speed, pitch) of every clip made per word."""
    out = [("espeak-ng", v, s, p) for v, s, p in itertools.product(ESPEAK_VOICES, ESPEAK_SPEEDS,
                                                                     ESPEAK_PITCHES)]
    return out + [("flite", v, 0, 0) for v in FLITE_VOICES]


def synthesize_speech_commands(root: Union[str, Path], words: Sequence[str] = WORDS) -> Path:
    """Writes `root`/<word>/<engine>-<voice>-<speed>-<pitch>.wav for every word and variant (24
    per word); files already there are kept, so a second call is quick."""
    root = Path(root)
    espeak, flite = _require("espeak-ng"), _require("flite")
    for word in words:
        (root / word).mkdir(parents=True, exist_ok=True)
        for engine, voice, speed, pitch in variants():
            path = root / word / f"{engine}-{voice.replace('+', '_')}-{speed}-{pitch}.wav"
            if path.exists() and path.stat().st_size > 44:
                continue
            tmp = path.with_suffix(".tmp.wav")
            if engine == "espeak-ng":
                cmd = [espeak, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(tmp), word]
            else:
                cmd = [flite, "-voice", voice, "-t", word, "-o", str(tmp)]
            subprocess.run(cmd, check=True, capture_output=True, timeout=60)
            tmp.replace(path)  # atomic: a killed run leaves no half-written clip
    return root
