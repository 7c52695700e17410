"""Copies each results file that README.md quotes into it: the block between
``<!-- path ... -->`` and ``<!-- end path -->`` becomes the file's text, so that every number in
the README is the one its command last wrote.

    python docs/update_readme.py           rewrite README.md
    python docs/update_readme.py --check   exit 1 (naming the files) where a quote is stale
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUOTE = re.compile(r"^(<!-- (?P<path>\S+\.md)\b[^\n]*-->\n)(?P<body>.*?)^(<!-- end (?P=path) -->)$", re.M | re.S)


def quoted(text: str) -> list:
    """[(path, quoted body)] of README text."""
    return [(m.group("path"), m.group("body")) for m in QUOTE.finditer(text)]


def updated(text: str) -> str:
    """README text with every quote replaced by its file's current text."""
    return QUOTE.sub(lambda m: m.group(1) + (ROOT / m.group("path")).read_text().strip() + "\n" + m.group(4), text)


def stale(text: str) -> list:
    """The paths whose quote in README text differs from the file's current text."""
    return [p for (p, body), (_, fresh) in zip(quoted(text), quoted(updated(text))) if body != fresh]


def main(argv=None) -> int:
    check = "--check" in (argv if argv is not None else sys.argv[1:])
    readme = ROOT / "README.md"
    text = readme.read_text()
    new = updated(text)
    stale_paths = stale(text)
    if check:
        if stale_paths:
            print("README.md quotes stale results: " + ", ".join(stale_paths) + " (run python docs/update_readme.py)")
            return 1
        return 0
    readme.write_text(new)
    print(f"README.md: {len(quoted(new))} quotes, {len(stale_paths)} updated ({', '.join(stale_paths) or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
