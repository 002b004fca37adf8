"""Calibrate `estimate_tokens` against the real Qwen2.5 tokenizer (vocab-only load, ≈ 10 s).

    .venv/bin/python benchmarks/token_estimate.py

Texts: 1,500-char slices of 40 random articles each from JSQuAD / JaQuAD (Wikipedia),
40 JEMHopQA fact cards, the demo notes and the seed note; ASCII: the ASCII lines of
the shared docs and the README (English prose with code names, not source code). Fits tokens per character class
(non-negative least squares, weighted by 1/sqrt(tokens), digits fixed at 1 token: Qwen
splits numbers into digits): the ASCII classes on the ASCII texts first, then the
Japanese classes on the Japanese texts with the ASCII ones fixed, then prints the fitted coefficients next to the ones in
`pipeline/answer/backends/base.py` and the relative error of the shipped ones per set.
"""

from __future__ import annotations

import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
EVALDATA = REPO.parent / "shared" / "evaldata"

from pipeline.tokens import _CHAR_CLASSES, TOKENS_PER_UNIT, estimate_tokens  # noqa: E402

CLASSES = ["kanji", "kana", "word", "space", "sym", "other"]


def texts() -> list[tuple[str, str]]:
    out = []
    for name in ["jsquad_v1.3_valid_articles", "jaquad_dev_articles", "jemhopqa_v1.2"]:
        rows = [json.loads(line) for line in open(EVALDATA / name / "corpus.jsonl", encoding="utf-8")]
        random.Random(0).shuffle(rows)
        for r in rows[:40]:
            for i in range(0, min(len(r["text"]), 6000), 1500):
                out.append((name, r["text"][i : i + 1500]))
    from pipeline.ingest.readers import read_document

    for path in sorted((REPO / "corpora" / "demo").iterdir()) + [REPO.parent / "shared" / "seeds" / "notes-llm-ja.txt"]:
        if path.exists():
            t = read_document(path).text
            out += [("demo notes", t[i : i + 1500]) for i in range(0, len(t), 1500)]
    sources = [REPO.parent / "shared" / "STYLE.md", REPO.parent / "shared" / "ARCHITECTURE.md", REPO / "README.md"]
    for path in filter(Path.exists, sources):
        s = "".join(line for line in path.read_text("utf-8").splitlines(True) if line.isascii())
        out += [("ascii", s[i : i + 1500]) for i in range(0, len(s), 1500)]
    return out


def main() -> int:
    from scipy.optimize import nnls

    from pipeline.answer.backends.llama_cpp import load_tokenizer
    from pipeline.models.gguf import prepare_gguf
    from pipeline.settings import default_cache_dir

    tok = load_tokenizer(prepare_gguf(default_cache_dir()))
    data = texts()
    y = np.array([len(tok.tokenize(t.encode(), add_bos=False, special=False)) for _, t in data], float)
    counts = [Counter(m.lastgroup for m in _CHAR_CLASSES.finditer(t)) for _, t in data]
    X = np.array([[c[k] for k in CLASSES] for c in counts], float)
    digits = np.array([c["digit"] for c in counts], float)
    w = 1 / np.sqrt(y)
    src = np.array([s for s, _ in data])
    # ASCII classes on the ASCII texts, then the Japanese ones on the rest with ASCII fixed.
    a, j = src == "ascii", src != "ascii"
    ascii_cols, ja_cols = [2, 3, 4], [0, 1, 5]
    coef = np.zeros(len(CLASSES))
    coef[ascii_cols], _ = nnls(X[a][:, ascii_cols] * w[a, None], (y[a] - digits[a]) * w[a])
    rest = y[j] - digits[j] - X[j][:, ascii_cols] @ coef[ascii_cols]
    coef[ja_cols], _ = nnls(X[j][:, ja_cols] * w[j, None], rest * w[j])
    print("class      fitted  shipped")
    for k, v in zip(CLASSES, coef):
        print(f"{k:8s} {v:8.3f} {TOKENS_PER_UNIT[k]:8.2f}")
    est = np.array([estimate_tokens(t) for _, t in data], float)
    print("\nshipped coefficients, (estimate - real) / real per slice:")
    print(f"{'set':28s} {'n':>4s} {'mean':>7s} {'p5':>7s} {'p95':>7s} {'max|e|':>7s}")
    for name in dict.fromkeys(src):
        i = src == name
        e = (est[i] - y[i]) / y[i]
        print(f"{name:28s} {i.sum():4d} {e.mean():+7.3f} {np.percentile(e, 5):+7.3f} "
              f"{np.percentile(e, 95):+7.3f} {np.abs(e).max():7.3f}")
    ja = np.isin(src, ["jsquad_v1.3_valid_articles", "jaquad_dev_articles", "demo notes"])
    chars = sum(len(t) for (s, t) in data if s != "ascii")
    print(f"\nJapanese sets overall: {y[ja].sum() / sum(len(t) for (s, t), j in zip(data, ja) if j):.3f} tokens/char "
          f"({chars} chars incl. JEMHopQA)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
