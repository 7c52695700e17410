"""Class folders: `root`/<class>/<file>, labels by sorted class name, with bad files reported by
name (or left out and counted, on request)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Sequence, Union


class FileList(NamedTuple):
    """files[i] has class labels[i]; classes[c] is the folder name of class c; skipped holds
    (file, reason) for the files left out as unreadable."""

    files: list
    labels: list
    classes: list
    skipped: list


def _usable(path: str, verify, skip_corrupt: bool, kind: str, skipped: list) -> bool:
    """True for a good file; a bad one raises, or is recorded in `skipped` with skip_corrupt."""
    problem = verify(path) if verify else None
    if problem is None:
        return True
    if not skip_corrupt:
        raise ValueError(f"{kind} file {path} cannot be decoded ({problem}); fix or remove it, or "
                         f"pass skip_corrupt=True to leave corrupt files out")
    skipped.append((path, problem))
    return False


def _walk_files(folder: Path, extensions: Sequence[str]) -> list:
    """Paths of the files under `folder` (symlinks to files and folders followed) with a suffix in
    `extensions`, sorted; a folder reached again (a symlink loop, or two links to one folder) is
    walked once, and a file reached by several paths is listed once (its first path)."""
    seen_dirs, seen_files, found = set(), set(), []
    for here, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(here)
        if real in seen_dirs:
            dirs[:] = []
            continue
        seen_dirs.add(real)
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(here, name)
            if Path(name).suffix.lower() not in extensions or not os.path.isfile(path):
                continue  # also a dangling link
            target = os.path.realpath(path)
            if target not in seen_files:
                seen_files.add(target)
                found.append((path, target))
    return sorted(found)


def list_class_folder(root: Union[str, Path], extensions: Sequence[str],
                      verify: Optional[Callable[[str], Optional[str]]] = None, *,
                      skip_corrupt: bool = False, kind: str = "data") -> FileList:
    """Lists `root`/<class>/<file> with a suffix in `extensions`.

    Symlinks (to files and to folders) are followed; a loop is walked once and a file reached by
    several paths is listed once. One file in two classes (e.g. a link in class a to a file of
    class b) is a ValueError naming both, never a file with another class's label.
    verify(path) returns None for a good file, else the reason it is bad: a bad file raises a
    ValueError naming it, or with skip_corrupt=True is left out and listed in `skipped`.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{kind} folder {root} does not exist (expected {root}/<class>/<file>)")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise ValueError(f"{kind} folder {root} has no class sub-folders (expected {root}/<class>/<file>)")
    files, labels, skipped, owner = [], [], [], {}
    for label, name in enumerate(classes):
        found = _walk_files(root / name, extensions)
        if not found:
            raise ValueError(f"class folder {root / name} has no {kind} files ({', '.join(extensions)})")
        for path, target in found:
            if target in owner:
                other, other_path = owner[target]
                raise ValueError(f"{kind} file {target} is in class {classes[other]!r} (as {other_path}) "
                                 f"and in class {name!r} (as {path}): one file cannot have two labels; "
                                 f"remove one of the two")
            owner[target] = (label, path)
            if _usable(path, verify, skip_corrupt, kind, skipped):
                files.append(path)
                labels.append(label)
    if not files:
        raise ValueError(f"{kind} folder {root}: every file was corrupt ({len(skipped)} skipped)")
    return FileList(files, labels, classes, skipped)


def read_file_list(path: Union[str, Path], root: Union[str, Path, None] = None,
                   verify: Optional[Callable[[str], Optional[str]]] = None, *,
                   skip_corrupt: bool = False, kind: str = "data") -> FileList:
    """A file list in DALI's `file_list` format: one "<relative path> <integer label>" per line,
    paths relative to `root` (default: the list's folder). Labels may be any integers >= 0, with
    gaps: `classes` holds the distinct labels as written (sorted numerically) and `labels` their
    indices in it (0..len(classes)-1), so the model has one output per class that occurs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file list {path} does not exist")
    root = Path(root) if root is not None else path.parent
    files, labels, skipped = [], [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit() or int(parts[1]) < 0:
            raise ValueError(f"{path}:{number}: expected '<path> <label >= 0>'; got {line!r}")
        file = str(root / parts[0])
        if not Path(file).is_file():
            raise FileNotFoundError(f"{path}:{number}: {kind} file {file} does not exist")
        if _usable(file, verify, skip_corrupt, kind, skipped):
            files.append(file)
            labels.append(int(parts[1]))
    if not files:
        raise ValueError(f"file list {path} names no usable files ({len(skipped)} skipped)")
    # the labels as written may have gaps and be any size: classes are the distinct labels, in
    # order, and each file's label is its class's index (classes[label] is the label as written)
    written = sorted(set(labels))
    index = {value: i for i, value in enumerate(written)}
    return FileList(files, [index[v] for v in labels], [str(v) for v in written], skipped)


class DaliVerifier:
    """verify(path) for list_class_folder / read_file_list that decodes the file with the very
    decoder call a pipeline uses (`decode`: DataNode of the encoded bytes -> DataNode of the
    decoded sample), in a one-sample CPU DALI pipeline: it accepts every format that decoder
    accepts and rejects what it would fail on. Returns None for a good file, else DALI's reason
    (and "empty" for a file that decodes to no data)."""

    def __init__(self, decode: Callable, num_threads: int = 1):
        self._decode, self._threads, self._pipe = decode, num_threads, None

    def _build(self):
        import numpy as np  # noqa: F401  (the external source takes numpy arrays)
        from nvidia.dali import fn, pipeline_def, types

        @pipeline_def(batch_size=1, num_threads=self._threads, device_id=None, seed=0,
                      prefetch_queue_depth=1, exec_async=False, exec_pipelined=False)
        def pipe():
            return self._decode(fn.external_source(name="encoded", dtype=types.UINT8, ndim=1))

        built = pipe()
        built.build()
        return built

    def __call__(self, path: str) -> Optional[str]:
        import numpy as np

        try:
            data = np.fromfile(path, dtype=np.uint8)
        except OSError as e:
            return f"cannot be read: {e.strerror or e}"
        if data.size == 0:
            return "empty file"
        if self._pipe is None:
            self._pipe = self._build()
        try:
            self._pipe.feed_input("encoded", [data])
            (out,) = self._pipe.run()
        except Exception as e:  # DALI raises RuntimeError (or others) for undecodable data
            self._pipe = None  # a pipeline that failed is not reused
            return " ".join(str(e).split("\n")[0].split())[:300] or type(e).__name__
        if out.as_array().size == 0 if out.is_dense_tensor() else True:
            return "decodes to no data"
        return None
