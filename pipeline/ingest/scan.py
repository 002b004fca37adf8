"""Finding the files an ingest should look at."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.ingest.readers import SUPPORTED_SUFFIXES


@dataclass(frozen=True)
class Scan:
    files: list[Path]  # absolute, sorted, supported suffixes
    skipped: list[tuple[str, str]]  # (path, reason)
    roots: list[Path]  # what deletions are scoped to


def _hidden(name: str) -> bool:
    return name.startswith(".")


def scan(paths: list[Path]) -> Scan:
    files: set[Path] = set()
    skipped: list[tuple[str, str]] = []
    roots: list[Path] = []
    for given in paths:
        p = Path(os.path.abspath(given))
        if not p.exists() and not p.is_symlink():
            skipped.append((str(p), "ファイルもフォルダもありません (not found)"))
            continue
        roots.append(p)
        if p.is_file():
            if p.suffix.lower() in SUPPORTED_SUFFIXES or p.suffix == "":
                files.add(p)
            else:
                skipped.append((str(p), f"対応していない形式です: {p.suffix} (unsupported)"))
            continue
        seen_dirs: set[tuple[int, int]] = set()
        for dirpath, dirnames, filenames in os.walk(p, followlinks=True, onerror=None):
            st = os.stat(dirpath)
            key = (st.st_dev, st.st_ino)
            if key in seen_dirs:  # symlink loop: do not descend again
                dirnames[:] = []
                skipped.append((dirpath, "シンボリックリンクが循環しています (symlink loop)"))
                continue
            seen_dirs.add(key)
            dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
            for name in filenames:
                if _hidden(name):
                    continue
                f = Path(dirpath) / name
                if f.suffix.lower() in SUPPORTED_SUFFIXES:
                    files.add(f)
    return Scan(sorted(files), skipped, roots)


def in_scope(path: str, roots: list[Path]) -> bool:
    return any(path == str(r) or path.startswith(str(r).rstrip("/") + "/") for r in roots)


def file_mtime(path: Path) -> float:
    """`path`'s mtime, or 0.0 when it cannot be stat'ed (a file may vanish during a run)."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
