"""PDF: pypdf text per page, pages joined by a blank line; `metadata["page_starts"]`."""

from __future__ import annotations

import io
from pathlib import Path

from pipeline.ingest.readers.base import Parsed, Unreadable
from pipeline.ingest.readers.decode import normalize_newlines

NOT_PDF = "PDFファイルではありません (no %PDF header)"
PDF_ENCRYPTED = "暗号化されたPDFです (encrypted PDF)"
PDF_NO_TEXT = "PDFからテキストを抽出できません (no extractable text; scanned PDF?)"

PDF_PAGE_SEPARATOR = "\n\n"


def parse(path: Path, raw: bytes) -> Parsed:
    if b"%PDF-" not in raw[:1024]:
        raise Unreadable(NOT_PDF)
    try:
        import pypdf

        reader = pypdf.PdfReader(io.BytesIO(raw))
        if reader.is_encrypted:
            try:
                ok = reader.decrypt("")
            except Exception:
                ok = 0
            if not ok:
                raise Unreadable(PDF_ENCRYPTED)
        pages = [page.extract_text() or "" for page in reader.pages]
        info = reader.metadata
        title = str(info.title or "").strip() if info is not None else ""
    except Unreadable:
        raise
    except Exception as err:  # pypdf raises many kinds on malformed files
        raise Unreadable(f"PDFを読み込めません ({type(err).__name__}: {err})") from err
    page_starts = []
    parts = []
    pos = 0
    for page in pages:
        page = normalize_newlines(page).replace("\x00", "").strip()
        page_starts.append(pos)
        parts.append(page)
        pos += len(page) + len(PDF_PAGE_SEPARATOR)
    text = PDF_PAGE_SEPARATOR.join(parts)
    if not text.strip():
        raise Unreadable(PDF_NO_TEXT)
    metadata = {"page_starts": page_starts, "pages": len(pages)}
    return Parsed(text, title, "", 0, (), metadata)

