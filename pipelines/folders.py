"""Class folders: `root`/<class>/<file>, labels by sorted class name, with bad files reported by
name (or left out and counted, on request)."""
from __future__ import annotations

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


def list_class_folder(root: Union[str, Path], extensions: Sequence[str],
                      verify: Optional[Callable[[str], Optional[str]]] = None, *,
                      skip_corrupt: bool = False, kind: str = "data") -> FileList:
    """Lists `root`/<class>/<file> with a suffix in `extensions`.

    verify(path) returns None for a good file, else the reason it is bad: a bad file raises a
    ValueError naming it, or with skip_corrupt=True is left out and listed in `skipped`.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{kind} folder {root} does not exist (expected {root}/<class>/<file>)")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise ValueError(f"{kind} folder {root} has no class sub-folders (expected {root}/<class>/<file>)")
    files, labels, skipped = [], [], []
    for label, name in enumerate(classes):
        found = sorted(str(p) for p in (root / name).rglob("*")
                       if p.is_file() and p.suffix.lower() in extensions)
        if not found:
            raise ValueError(f"class folder {root / name} has no {kind} files ({', '.join(extensions)})")
        for path in found:
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
    paths relative to `root` (default: the list's folder). Classes are named by their label."""
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
    classes = [str(c) for c in range(max(labels) + 1)]
    return FileList(files, labels, classes, skipped)
