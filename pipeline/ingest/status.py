"""What an index holds and how fresh it is (`rag status`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import IndexNotFound
from pipeline.index.manifest import Manifest, load_last_run
from pipeline.ingest.scan import file_mtime, in_scope, scan

if TYPE_CHECKING:
    from pipeline.settings import Settings


def _dir_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def index_status(settings: "Settings", index_dir: Path | None = None) -> dict:
    index_dir = Path(index_dir or settings.index_dir)
    manifest = Manifest.load(index_dir)
    if manifest is None:
        raise IndexNotFound(str(index_dir))
    last_run = load_last_run(index_dir, manifest.roots or None)  # IndexCorrupt when damaged

    # Files changed on disk since the last ingest (same test the ingest uses).
    modified, missing = [], []
    for path, entry in manifest.documents.items():
        try:
            st = os.stat(path)
        except OSError:
            missing.append(path)
            continue
        if st.st_size != entry.size or st.st_mtime_ns != entry.mtime_ns:
            modified.append(path)
    new_files: list[str] = []
    roots = [Path(r) for r in (last_run or {}).get("roots", [])]
    if roots:
        found = scan(roots)
        # A file the last ingest skipped (and named) is new work only once it changes again.
        skipped = {s["path"] for s in (last_run or {}).get("skipped", [])}
        started = (last_run or {}).get("started_at", 0.0)
        new_files = [
            str(f) for f in found.files
            if str(f) not in manifest.documents and in_scope(str(f), roots)
            and not (str(f) in skipped and file_mtime(f) < started)
        ]

    chars = sum(d.chars for d in manifest.documents.values())
    embed_tokens = sum(d.tokens for d in manifest.documents.values())
    # The LLM's tokenizer is not loaded here: estimate from characters (marked as such).
    from pipeline.tokens import ANSWER_TEMPLATE_TOKENS, QUESTION_TOKENS, estimate_tokens, usable_window

    llm_tokens_est = 0
    if manifest.snapshot:
        from pipeline.index.snapshot import IndexSnapshot

        documents = IndexSnapshot(settings, index_dir).documents  # checked against the manifest
        llm_tokens_est = sum(estimate_tokens(d.text) for d in documents.values())
    window = {"ollama": settings.ollama_context, "openai": settings.openai_context}.get(
        settings.llm_backend, settings.llm_context
    )
    usable = usable_window(
        window, prompt_tokens=ANSWER_TEMPLATE_TOKENS + QUESTION_TOKENS, answer_tokens=settings.answer_tokens
    )
    formats: dict[str, int] = {}
    encodings: dict[str, int] = {}
    for d in manifest.documents.values():
        formats[d.format] = formats.get(d.format, 0) + 1
        encodings[d.encoding] = encodings.get(d.encoding, 0) + 1
    return {
        "index_dir": str(index_dir),
        "generation": manifest.generation,
        "documents": len(manifest.documents),
        "chunks": sum(len(d.chunk_ids) for d in manifest.documents.values()),
        "characters": chars,
        "embedding_tokens": embed_tokens,
        "llm_tokens_estimated": llm_tokens_est,
        "formats": formats,
        "encodings": encodings,
        "size_bytes": _dir_size(index_dir),
        "embed_model": manifest.fingerprint.get("embed_model"),
        "chunk_tokens": manifest.fingerprint.get("chunk_tokens"),
        "llm_backend": settings.llm_backend,
        "long_context_window": window,
        "fits_long_context": llm_tokens_est <= usable,
        "last_ingest": last_run,
        "changed_since_ingest": {"modified": modified, "deleted": missing, "new": new_files},
    }
