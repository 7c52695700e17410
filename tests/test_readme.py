"""Every ```python block of README.md runs as written, on the CPU.

The blocks run in order in one namespace (later blocks use earlier ones' names, as a reader
pasting them into one session would), in a fresh interpreter, after this mechanical substitution
for a machine without a GPU and without ImageNet (the README says so where it shows the blocks):

* ``device_id=0`` -> ``device_id=None``; ``device="mixed"`` / ``device="gpu"`` -> ``device="cpu"``
* ``.gpu()`` and ``.cuda()`` removed
* ``batch_size=128`` -> ``batch_size=4`` (one short epoch)
* ``"/data/imagenet/train"`` -> a folder of JPEGs written by this test (2 classes x 4 images)
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import sample_photos

ROOT = Path(__file__).resolve().parents[1]
SUBSTITUTIONS = [
    ("device_id=0", "device_id=None"),
    ('device="mixed"', 'device="cpu"'),
    ('device="gpu"', 'device="cpu"'),
    (".gpu()", ""),
    (".cuda()", ""),
    ("batch_size=128", "batch_size=4"),
]


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)


def cpu_version(block: str, data_dir: Path) -> str:
    for old, new in SUBSTITUTIONS:
        block = block.replace(old, new)
    return block.replace('"/data/imagenet/train"', repr(str(data_dir)))


def test_readme_has_the_blocks_this_test_substitutes():
    text = "\n".join(python_blocks())
    assert len(python_blocks()) >= 4
    assert "device_id=0" in text and '"/data/imagenet/train"' in text


def test_every_readme_python_block_runs_on_cpu(tmp_path):
    data = tmp_path / "imagenet"
    for label, photo in enumerate(sample_photos(64)[:2]):
        (data / f"n{label:08d}").mkdir(parents=True)
        for j in range(4):
            Image.fromarray(np.roll(photo, 3 * j, axis=0)).save(data / f"n{label:08d}" / f"{j}.JPEG")
    blocks = [cpu_version(b, data) for b in python_blocks()]
    runner = ["import sys, traceback", "namespace = {'__name__': '__main__'}"]
    for i, block in enumerate(blocks):
        runner += [f"print('block {i}', flush=True)",
                   f"exec(compile({block!r}, 'README block {i}', 'exec'), namespace)"]
    runner.append("print('all blocks ran')")
    script = tmp_path / "readme_blocks.py"
    script.write_text("\n".join(runner) + "\n")
    result = subprocess.run([sys.executable, str(script)], cwd=str(ROOT), capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0 and "all blocks ran" in result.stdout, (
        result.stdout[-2000:] + result.stderr[-4000:])


def test_readme_quotes_the_results_files_as_they_are():
    """Every `<!-- path -->` ... `<!-- end path -->` block of the README is that results file's
    current text (python docs/update_readme.py copies them in), so no README number is stale."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("update_readme", ROOT / "docs" / "update_readme.py")
    update = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(update)
    text = (ROOT / "README.md").read_text()
    quotes = update.quoted(text)
    assert len(quotes) >= 8, [p for p, _ in quotes]
    assert not update.stale(text), f"stale README quotes {update.stale(text)}: run python docs/update_readme.py"
    # the check can fail: a quote that lost a line is found, and updating restores it
    path, body = quotes[0]
    broken = text.replace(body, body.split("\n", 1)[1], 1)
    assert update.stale(broken) == [path]
    assert update.updated(broken) == text
