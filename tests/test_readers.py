"""Reading files into Documents: encodings, formats, and every way a file can be bad."""

from __future__ import annotations

import builtins
import hashlib
import io
import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.documents import Document
from pipeline.errors import ReadError
from pipeline.ingest import readers
from pipeline.ingest.readers import SUPPORTED_SUFFIXES, format_of, read_document

SEED = Path(__file__).resolve().parents[1].parent / "shared" / "seeds" / "notes-llm-ja.txt"

LONG_NOTE = (
    "大規模言語モデル（LLM）とは、大量のテキストデータを用いて学習した言語モデルである。\n"
    "文章の生成や要約、翻訳、質問応答など、さまざまな自然言語処理のタスクをこなすことができる。\n"
    "ハルシネーションとは、人工知能が虚偽または誤解を招く情報を事実として提示する応答のことだ。\n"
    "コンテキストウィンドウが大きいほど、モデルはより長い文章を一度に処理できるようになる。\n"
    "検索拡張生成（RAG）では、検索した文書を根拠として回答を生成し、出典を示す。\n"
    "７Ｂのモデルは４ビット量子化すれば、約４ＧＢのメモリで動かせる。§1.4 推論パラメータ参照。\n"
)
SHORT_NOTES = [
    "ハルシネーションの問題は、簡単に嘘をつくこと。",
    "今日は町田図書館で本を借りた。面白かった！",
    "モデルが一度に処理できるトークン数",
    "温度パラメータを下げると出力が安定する。",
]
JAPANESE_NOTES = [pytest.param(LONG_NOTE, id="long")] + [
    pytest.param(t, id=f"short{i}") for i, t in enumerate(SHORT_NOTES)
]


def write(tmp_path: Path, name: str, data: bytes | str, encoding: str = "utf-8") -> Path:
    p = tmp_path / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode(encoding))
    return p


# ------------------------------------------------------------------ encodings


@pytest.mark.parametrize("text", JAPANESE_NOTES)
def test_shift_jis_note_is_read_without_loss(tmp_path, text):
    doc = read_document(write(tmp_path, "note.txt", text, "cp932"))
    assert doc.text == text
    assert doc.encoding == "cp932"
    assert "warning" not in doc.metadata


@pytest.mark.parametrize("text", JAPANESE_NOTES)
def test_euc_jp_note_is_read_without_loss(tmp_path, text):
    doc = read_document(write(tmp_path, "note.txt", text, "euc_jp"))
    assert doc.text == text
    assert doc.encoding == "euc_jp"


@pytest.mark.parametrize("text", JAPANESE_NOTES)
def test_utf8_note_is_read_as_utf8(tmp_path, text):
    doc = read_document(write(tmp_path, "note.txt", text))
    assert (doc.text, doc.encoding) == (text, "utf-8")


@pytest.mark.parametrize(
    "text",
    [
        "①から⑩の手順で㈱サンプルに連絡する。ＮＥＣ特殊文字を含むメモ。",  # cp932-only chars
        "ｶﾀｶﾅの半角メモ：ﾊﾙｼﾈｰｼｮﾝに注意すること。",  # half-width katakana
    ],
)
def test_cp932_only_characters_are_read_as_cp932(tmp_path, text):
    doc = read_document(write(tmp_path, "note.txt", text, "cp932"))
    assert (doc.text, doc.encoding) == (text, "cp932")


@pytest.mark.parametrize("text", ["文単典天法" * 3, "典天法文単", "文" * 20])
def test_kanji_only_euc_jp_that_is_also_valid_utf8_is_read_as_euc_jp(tmp_path, text):
    # 文 is C5 B8 in EUC-JP, which is also UTF-8 for "ʸ"
    assert text.encode("euc_jp").decode("utf-8")
    doc = read_document(write(tmp_path, "kanji.txt", text, "euc_jp"))
    assert (doc.text, doc.encoding) == (text, "euc_jp")


@pytest.mark.parametrize(
    "text",
    ["Le café est très bon. Élève, été, crème brûlée.", "été", "Müller Straße Größe über", "Привет, как дела?"],
)
def test_european_utf8_text_is_not_mistaken_for_japanese(tmp_path, text):
    doc = read_document(write(tmp_path, "eu.txt", text))
    assert (doc.text, doc.encoding) == (text, "utf-8")


def test_utf8_bom_is_dropped_and_recorded(tmp_path):
    p = write(tmp_path, "bom.md", "\ufeff# 見出し\n本文です。\n")
    doc = read_document(p)
    assert doc.encoding == "utf-8-sig"
    assert doc.text == "# 見出し\n本文です。\n"
    assert doc.title == "見出し"
    assert doc.sections[0].start == 0


def test_utf16_with_bom_is_read(tmp_path):
    doc = read_document(write(tmp_path, "u16.txt", "メモ\nUTF-16で保存した。\r\n", "utf-16"))
    assert doc.encoding == "utf-16"
    assert doc.text == "メモ\nUTF-16で保存した。\n"


def test_iso_2022_jp_mail_text_is_read(tmp_path):
    text = "件名：会議のお知らせ\n明日の会議は十時からです。\n"
    doc = read_document(write(tmp_path, "mail.txt", text, "iso2022_jp"))
    assert (doc.text, doc.encoding) == (text, "iso2022_jp")


@pytest.mark.parametrize("encoding", ["utf-8", "cp932", "euc_jp"])
def test_crlf_and_cr_newlines_become_lf_and_offsets_point_into_normalized_text(tmp_path, encoding):
    source = "# 第一章\r\n本文一行目。\r\n## 第二節\r本文二行目。\r\n"
    doc = read_document(write(tmp_path, "crlf.md", source, encoding))
    assert doc.text == "# 第一章\n本文一行目。\n## 第二節\n本文二行目。\n"
    second = doc.sections[1]
    assert doc.text[second.start :].startswith("## 第二節")
    assert doc.line_of(second.start) == 3
    assert doc.heading_path_at(doc.text.index("本文二行目")) == ("第一章", "第二節")


@pytest.mark.parametrize("encoding", ["utf-8", "cp932", "euc_jp"])
def test_truncated_last_char_is_dropped_with_a_warning(tmp_path, encoding):
    text = "途中で切れたファイル。最後の文字が欠けている"
    data = text.encode(encoding)[:-1]  # cut inside the last (multi-byte) char
    doc = read_document(write(tmp_path, "cut.txt", data))
    assert doc.text == text[:-1]
    assert doc.encoding == encoding
    assert "truncated" in doc.metadata["warning"]


def test_a_single_corrupt_byte_in_a_long_file_is_replaced_with_a_warning(tmp_path):
    text = LONG_NOTE * 3
    cut = len(text[:40].encode("utf-8"))  # a char boundary
    data = text.encode("utf-8")[:cut] + b"\xff" + text.encode("utf-8")[cut:]
    doc = read_document(write(tmp_path, "corrupt.txt", data))
    assert doc.text.count("\ufffd") == 1
    assert "U+FFFD" in doc.metadata["warning"]


def test_mostly_undecodable_file_is_refused(tmp_path):
    rng = random.Random(7)
    junk = bytes(rng.choice(range(0x80, 0x100)) for _ in range(400))
    p = write(tmp_path, "junk.txt", "はじめに\n".encode() + junk)
    with pytest.raises(ReadError) as err:
        read_document(p)
    assert "文字コード" in err.value.reason


JAPANESE_ALPHABET = "".join(
    c
    for c in (
        "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをんがぎぐげござじずぜぞだでどばびぶべぼぱぴぷぺぽっゃゅょ"
        "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワヲンガギグゲゴザジズゼゾダデドバビブベボパピプペポッャュョー"
        "日本語文章言語大規模学習推論問題簡単情報処理検索生成回答出典根拠図書館東京都千代田区今日明天気散歩会議時間手法量子化"
        "、。「」・（）！？　"
        "ABCxyz0123 .,\n\r"
    )
    if c.encode("cp932").decode("cp932") == c and c.encode("euc_jp").decode("euc_jp") == c
)
KANA = set(JAPANESE_ALPHABET[: JAPANESE_ALPHABET.index("日")])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.text(alphabet=JAPANESE_ALPHABET, min_size=20, max_size=300).filter(
        # Japanese prose has kana. Kanji + ASCII only can be byte-for-byte valid UTF-8
        # when written in EUC-JP ("文" * 20 is also "ʸ" * 20): not decidable.
        lambda t: t.strip() and any(c in KANA for c in t)
    ),
    encoding=st.sampled_from(["utf-8", "cp932", "euc_jp"]),
)
def test_any_japanese_text_round_trips_in_every_supported_encoding(tmp_path, text, encoding):
    doc = read_document(write(tmp_path, "prop.txt", text, encoding))
    assert doc.text == text.replace("\r\n", "\n").replace("\r", "\n")


# ------------------------------------------------------------------ Markdown

MARKDOWN = """---
title: "RAG入門メモ"
tags: [RAG, 検索, LLM]
aliases:
  - 検索拡張生成
  - Retrieval-Augmented Generation
date: 2025-03-11
---
# 検索拡張生成

RAGは検索した文書を根拠に回答する。

## 検索

### BM25
BM25は語の頻度で文書を採点する。

```python
# これは見出しではない
print("コード")
```

## 生成 ##
生成は LLM が行う。
#タグは見出しではない
"""


def test_markdown_front_matter_gives_title_tags_and_body_start(tmp_path):
    doc = read_document(write(tmp_path, "rag.md", MARKDOWN))
    assert doc.format == "markdown"
    assert doc.title == "RAG入門メモ"
    assert doc.metadata["tags"] == ["RAG", "検索", "LLM"]
    assert doc.metadata["aliases"] == ["検索拡張生成", "Retrieval-Augmented Generation"]
    assert doc.metadata["date"] == "2025-03-11"
    assert doc.text == MARKDOWN  # verbatim
    assert doc.text[doc.body_start :].startswith("# 検索拡張生成")


def test_markdown_heading_paths_follow_levels_and_skip_code_fences(tmp_path):
    doc = read_document(write(tmp_path, "rag.md", MARKDOWN))
    paths = [s.path for s in doc.sections]
    assert paths == [
        ("検索拡張生成",),
        ("検索拡張生成", "検索"),
        ("検索拡張生成", "検索", "BM25"),
        ("検索拡張生成", "生成"),
    ]
    for s in doc.sections:
        assert doc.text[s.start :].startswith("#")
    assert doc.heading_path_at(doc.text.index("語の頻度")) == ("検索拡張生成", "検索", "BM25")


@pytest.mark.parametrize(
    "source, title",
    [
        ("# Ollamaの使い方\n本文。\n", "Ollamaの使い方"),
        ("前置き。\n## 小見出し\n# 大見出し\n", "大見出し"),
        ("見出しのないメモ。\n", "memo"),
        ("---\nauthor: 山田\n---\n# 本当のタイトル\n本文。\n", "本当のタイトル"),
    ],
)
def test_markdown_title_is_front_matter_then_first_h1_then_stem(tmp_path, source, title):
    assert read_document(write(tmp_path, "memo.md", source)).title == title


def test_markdown_without_closing_front_matter_is_plain_body(tmp_path):
    doc = read_document(write(tmp_path, "x.md", "---\nこれは区切り線のあとの本文。\n"))
    assert doc.body_start == 0
    assert doc.metadata == {}


SETEXT = "前置き。\n\n検索拡張生成\n============\n\nRAGの説明。\n\n検索\n----\nBM25の説明。\n\n  生成\n  ===\n生成の説明。\n"


def test_markdown_setext_headings_are_sections_starting_at_their_title_line(tmp_path):
    doc = read_document(write(tmp_path, "setext.md", SETEXT))
    assert [s.path for s in doc.sections] == [("検索拡張生成",), ("検索拡張生成", "検索"), ("生成",)]
    assert [s.start for s in doc.sections] == [
        SETEXT.index("検索拡張生成\n"),
        SETEXT.index("検索\n"),
        SETEXT.index("  生成\n"),
    ]
    assert doc.title == "検索拡張生成"
    assert doc.heading_path_at(SETEXT.index("BM25の説明")) == ("検索拡張生成", "検索")
    assert doc.heading_path_at(SETEXT.index("前置き")) == ()


def test_markdown_setext_heading_after_front_matter_is_offset_by_it(tmp_path):
    source = "---\ntags: [メモ]\n---\n見出し\n---\n本文。\n"
    doc = read_document(write(tmp_path, "fm.md", source))
    assert doc.metadata["tags"] == ["メモ"]
    assert [(s.start, s.path) for s in doc.sections] == [(source.index("見出し"), ("見出し",))]


@pytest.mark.parametrize("fence", ["```", "~~~", "````"])
def test_markdown_hash_line_inside_a_fence_is_not_a_heading(tmp_path, fence):
    source = f"# 本当の見出し\n\n{fence}sh\n# コメント\n見出しではない\n---\n{fence}\n\n## 後の見出し\n"
    doc = read_document(write(tmp_path, "fence.md", source))
    assert [s.path for s in doc.sections] == [("本当の見出し",), ("本当の見出し", "後の見出し")]
    assert [s.start for s in doc.sections] == [0, source.index("## 後の見出し")]
    assert doc.heading_path_at(source.index("# コメント")) == ("本当の見出し",)


def test_markdown_unclosed_fence_hides_the_hash_lines_after_it(tmp_path):
    doc = read_document(write(tmp_path, "open.md", "# 見出し\n```\n# コード\n"))
    assert [s.path for s in doc.sections] == [("見出し",)]


def test_markdown_yaml_front_matter_with_list_date_and_quoted_title(tmp_path):
    source = (
        "---\n"
        "title: 'RAG: 入門 #1'\n"
        "date: 2025-03-11\n"
        "tags:\n"
        "  - RAG\n"
        "  - '#検索'\n"
        "authors: [山田, 'Suzuki, K.']\n"
        "draft: false\n"
        "---\n"
        "本文。\n"
    )
    doc = read_document(write(tmp_path, "fm.md", source))
    assert doc.title == "RAG: 入門 #1"
    assert doc.metadata["date"] == "2025-03-11"
    assert doc.metadata["tags"] == ["RAG", "検索"]
    assert doc.metadata["authors"] == ["山田", "Suzuki, K."]
    assert doc.metadata["draft"] is False
    assert doc.text[doc.body_start :] == "本文。\n"


def test_markdown_invalid_yaml_front_matter_is_skipped_with_a_warning_and_the_note_is_read(tmp_path):
    source = "---\ntitle: [閉じていない\n---\n# 見出し\n本文。\n"
    doc = read_document(write(tmp_path, "bad.md", source))
    assert doc.text[doc.body_start :] == "# 見出し\n本文。\n"
    assert doc.title == "見出し"
    assert "title" not in doc.metadata
    assert "YAML" in doc.metadata["warning"]


def test_markdown_text_between_rules_is_body_not_front_matter(tmp_path):
    source = "---\nただの前置きの文章。\n---\n本文。\n"
    doc = read_document(write(tmp_path, "rule.md", source))
    assert doc.body_start == 0
    assert doc.metadata == {}


# ------------------------------------------------------------------ org-mode

ORG = """#+TITLE: LLMメモ
#+AUTHOR: 山田太郎
#+FILETAGS: :llm:rag:
#+TODO: TODO WIP | DONE

* TODO [#A] 推論モデル                                          :ai:llm:
<2025-03-11 Tue 08:28>
Reasoning Model. 2025年から。
** WIP 調査 [2025-03-12 水]
DeepSeekを調べる。
* DONE 読書
  CLOSED: [2024-12-03 Tue 17:12]
- 大規模言語モデルは新たな知能か
"""


def test_org_header_becomes_metadata_and_body_starts_after_it(tmp_path):
    doc = read_document(write(tmp_path, "llm.org", ORG))
    assert doc.format == "org"
    assert doc.title == "LLMメモ"
    assert doc.metadata["author"] == "山田太郎"
    assert doc.metadata["tags"] == ["llm", "rag"]
    assert doc.text == ORG
    assert doc.text[doc.body_start :].lstrip("\n").startswith("* TODO")


def test_org_headings_drop_todo_priority_and_tags(tmp_path):
    doc = read_document(write(tmp_path, "llm.org", ORG))
    assert [s.path for s in doc.sections] == [
        ("推論モデル",),
        ("推論モデル", "調査 [2025-03-12 水]"),
        ("読書",),
    ]
    for s in doc.sections:
        assert doc.text[s.start] == "*"


def test_org_timestamps_are_collected_as_iso(tmp_path):
    doc = read_document(write(tmp_path, "llm.org", ORG))
    assert doc.metadata["timestamps"] == ["2025-03-11T08:28", "2025-03-12", "2024-12-03T17:12"]


def test_org_property_drawer_at_top_is_header(tmp_path):
    source = ":PROPERTIES:\n:ID:       abc-123\n:END:\n#+title: ノート\n本文です。\n"
    doc = read_document(write(tmp_path, "roam.org", source))
    assert doc.title == "ノート"
    assert doc.metadata["properties"] == {"id": "abc-123"}
    assert doc.text[doc.body_start :] == "本文です。\n"


# ------------------------------------------------------------- plain text

EMOJI_LINES = [
    ("🐥Glossary", True),
    ("😛ハルシネーション", True),
    ("🪟Context Window", True),
    ("🇯🇵国産LLM", True),
    ("🤖llms.txt", True),
    ("[** 見出し]", True),
    ("- 🤖Claude: 長文生成に優れる.", False),
    ("🤖LLMを活用する🤖AI Agents.", False),
    ("🔖GoogleのチャットAI. 旧Bard.", False),
    ("📝Self-Attention Mechanismの説明からの余談.", False),
    ("✔ 完了", False),
    ("LLMモデル", False),
    ("p117. 🔖ポジティブ思考", False),
]


@pytest.mark.parametrize("line, is_heading", EMOJI_LINES)
def test_emoji_prefixed_page_link_lines_are_headings(tmp_path, line, is_heading):
    doc = read_document(write(tmp_path, "scrap.txt", f"前置きの文。\n{line}\n本文。\n"))
    assert [s.path for s in doc.sections] == ([(line,)] if is_heading else [])


def test_seed_note_is_read_as_text_with_emoji_headings(tmp_path):
    if not SEED.exists():
        pytest.skip(f"seed note not found: {SEED}")
    doc = read_document(SEED)
    assert doc.format == "text"
    assert doc.encoding == "utf-8"
    assert doc.path == str(SEED)
    paths = [s.path for s in doc.sections]
    for heading in ["🐥Glossary", "😛ハルシネーション", "🪟Context Window", "🇯🇵国産LLM", "👉Related"]:
        assert (heading,) in paths
    assert ("🤖LLMを活用する🤖AI Agents.",) not in paths
    start = next(s.start for s in doc.sections if s.path == ("😛ハルシネーション",))
    assert doc.text[start:].startswith("😛ハルシネーション\n幻覚.")
    assert doc.heading_path_at(doc.text.index("簡単に嘘をつく")) == ("😛ハルシネーション",)
    # the first line is a sentence, not a title
    assert doc.title == "notes-llm-ja"
    assert "2025-03-11T08:28" in doc.metadata["timestamps"]


@pytest.mark.parametrize(
    "source, title",
    [
        ("量子化メモ\n7Bモデルは4bit量子化で約4GBのメモリで動く。\n", "量子化メモ"),
        ("\n\n  買い物リスト  \n- 牛乳\n", "買い物リスト"),
        ("これは最初の行ですが文になっています。\n続き\n", "note"),
        ("あ" * 70 + "\n", "note"),
    ],
)
def test_text_title_is_a_short_first_line_else_the_stem(tmp_path, source, title):
    assert read_document(write(tmp_path, "note.txt", source)).title == title


def test_file_without_suffix_is_read_as_text(tmp_path):
    doc = read_document(write(tmp_path, "README", "説明\nこのフォルダのメモ。\n"))
    assert doc.format == "text"
    assert doc.title == "説明"


def test_document_records_path_hash_and_mtime(tmp_path):
    p = write(tmp_path, "NOTE.MD", "# 大文字の拡張子\n本文。\n", "cp932")
    os.utime(p, (1_700_000_000, 1_700_000_000))
    doc = read_document(p)
    assert isinstance(doc, Document)
    assert doc.path == str(p)
    assert doc.format == "markdown"
    assert doc.mtime == 1_700_000_000
    assert doc.content_hash == hashlib.sha256(p.read_bytes()).hexdigest()


def test_suffix_table():
    assert {".md", ".markdown", ".org", ".txt", ".text", ".html", ".htm", ".pdf"} == SUPPORTED_SUFFIXES
    assert format_of("a/b.HTM") == "html"
    assert format_of("notes") == "text"
    assert format_of("x.docx") is None


def test_public_names_are_exported():
    assert sorted(readers.__all__) == ["SUPPORTED_SUFFIXES", "format_of", "read_document"]


# ------------------------------------------------------------------- HTML

HTML = """<!DOCTYPE html>
<html lang="ja"><head>
<meta charset="{charset}">
<title>RAGの解説</title>
<meta name="description" content="検索拡張生成の説明">
<style>body {{ color: red; }}</style>
<script>var secret = "スクリプトの中身";</script>
</head>
<body>
<!-- コメントは見えない -->
<noscript>JavaScriptを有効にしてください</noscript>
<h1>検索拡張生成</h1>
<p>RAGは検索した文書を根拠に
回答する手法です。<b>出典</b>を示す。</p>
<h2>検索</h2>
<ul><li>BM25</li><li>ベクトル検索</li></ul>
<template><p>テンプレートも見えない</p></template>
<div>一行目<br>二行目</div>
<pre>  コード  ブロック
  二行目</pre>
<table><tr><td>項目</td><td>値</td></tr></table>
</body></html>
"""


@pytest.mark.parametrize("charset, encoding", [("utf-8", "utf-8"), ("Shift_JIS", "cp932"), ("EUC-JP", "euc_jp")])
def test_html_visible_text_without_script_or_style(tmp_path, charset, encoding):
    p = write(tmp_path, "page.html", HTML.format(charset=charset), encoding)
    doc = read_document(p)
    assert doc.format == "html"
    assert doc.encoding == encoding
    assert doc.title == "RAGの解説"
    assert doc.metadata["description"] == "検索拡張生成の説明"
    lines = doc.text.split("\n")
    assert lines[:6] == [
        "検索拡張生成",
        "RAGは検索した文書を根拠に回答する手法です。出典を示す。",
        "検索",
        "BM25",
        "ベクトル検索",
        "一行目",
    ]
    assert "  コード  ブロック\n  二行目" in doc.text
    assert "項目 値" in doc.text
    for hidden in ["secret", "color", "コメント", "JavaScript", "テンプレート", "RAGの解説"]:
        assert hidden not in doc.text
    assert [s.path for s in doc.sections] == [("検索拡張生成",), ("検索拡張生成", "検索")]
    assert [doc.text[s.start :].split("\n")[0] for s in doc.sections] == ["検索拡張生成", "検索"]


def test_html_without_visible_text_is_refused(tmp_path):
    p = write(tmp_path, "empty.html", "<html><head><title>空</title></head><body><script>x()</script></body></html>")
    with pytest.raises(ReadError, match="表示されるテキストがありません"):
        read_document(p)


# -------------------------------------------------------------------- PDF


def make_pdf(pages: list[list[str]], title: str | None = None) -> bytes:
    """A minimal PDF: ASCII lines in Helvetica, other lines in a Type0 font whose
    ToUnicode CMap maps 2-byte codes to the chars (enough for text extraction)."""
    chars = sorted({c for page in pages for line in page if not line.isascii() for c in line})
    code = {c: i + 1 for i, c in enumerate(chars)}
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    def stream(data: bytes) -> bytes:
        return b"<< /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"

    catalog = add(b"")  # filled in below
    pages_obj = add(b"")
    helv = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    cmap = (
        "/CIDInit /ProcSet findresource begin 12 dict begin begincmap\n"
        "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
        "/CMapName /Adobe-Identity-UCS def /CMapType 2 def\n"
        "1 begincodespacerange <0000> <FFFF> endcodespacerange\n"
        f"{len(chars)} beginbfchar\n"
        + "".join(f"<{code[c]:04X}> <{ord(c):04X}>\n" for c in chars)
        + "endbfchar endcmap CMapName currentdict /CMap defineresource pop end end\n"
    ).encode()
    to_unicode = add(stream(cmap))
    cid = add(
        b"<< /Type /Font /Subtype /CIDFontType2 /BaseFont /JPDummy "
        b"/CIDSystemInfo << /Registry (Adobe) /Ordering (Identity) /Supplement 0 >> "
        b"/FontDescriptor << /Type /FontDescriptor /FontName /JPDummy /Flags 4 "
        b"/FontBBox [0 0 1000 1000] /ItalicAngle 0 /Ascent 880 /Descent -120 "
        b"/CapHeight 700 /StemV 80 >> /DW 1000 >>"
    )
    jp = add(
        b"<< /Type /Font /Subtype /Type0 /BaseFont /JPDummy /Encoding /Identity-H "
        b"/DescendantFonts [%d 0 R] /ToUnicode %d 0 R >>" % (cid, to_unicode)
    )
    kids = []
    for page in pages:
        ops = []
        for i, line in enumerate(page):
            y = 750 - 20 * i
            if line.isascii():
                lit = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
                ops.append(f"BT /F1 12 Tf 72 {y} Td ({lit}) Tj ET")
            else:
                hexs = "".join(f"{code[c]:04X}" for c in line)
                ops.append(f"BT /F2 12 Tf 72 {y} Td <{hexs}> Tj ET")
        content = add(stream("\n".join(ops).encode("ascii")))
        kids.append(
            add(
                b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
                b"/Resources << /Font << /F1 %d 0 R /F2 %d 0 R >> >> >>"
                % (pages_obj, content, helv, jp)
            )
        )
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % pages_obj
    objects[pages_obj - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % k for k in kids),
        len(kids),
    )
    info = None
    if title is not None:
        info = add(b"<< /Title <FEFF%s> >>" % title.encode("utf-16-be").hex().upper().encode())
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % n + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for off in offsets:
        out.write(b"%010d 00000 n \n" % off)
    trailer = b"<< /Size %d /Root %d 0 R" % (len(objects) + 1, catalog)
    if info:
        trailer += b" /Info %d 0 R" % info
    out.write(b"trailer\n" + trailer + b" >>\nstartxref\n%d\n%%%%EOF\n" % xref)
    return out.getvalue()


def test_pdf_text_is_extracted_per_page_with_page_starts(tmp_path):
    pdf = make_pdf([["Retrieval augmented generation", "Second line"], ["Page two text"]], "RAG Notes")
    doc = read_document(write(tmp_path, "paper.pdf", pdf))
    assert doc.format == "pdf"
    assert doc.title == "RAG Notes"
    assert "Retrieval augmented generation" in doc.text
    starts = doc.metadata["page_starts"]
    assert len(starts) == 2 and starts[0] == 0
    assert doc.text[starts[1] :].startswith("Page two text")
    assert doc.text[: starts[1]].endswith("\n\n")
    assert doc.content_hash == hashlib.sha256(pdf).hexdigest()


def test_pdf_japanese_text_is_extracted_and_title_defaults_to_stem(tmp_path):
    pdf = make_pdf([["大規模言語モデルの論文", "ハルシネーションについて"]])
    doc = read_document(write(tmp_path, "論文.pdf", pdf))
    assert "大規模言語モデルの論文" in doc.text
    assert "ハルシネーションについて" in doc.text
    assert doc.title == "論文"


def test_pdf_without_text_is_refused(tmp_path):
    import pypdf

    writer = pypdf.PdfWriter()
    writer.add_blank_page(width=200, height=200)
    buf = io.BytesIO()
    writer.write(buf)
    p = write(tmp_path, "scan.pdf", buf.getvalue())
    with pytest.raises(ReadError, match="PDFからテキストを抽出できません") as err:
        read_document(p)
    assert str(p) in str(err.value)


@pytest.mark.parametrize(
    "data",
    [b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog", b"not a pdf at all, just text"],
    ids=["truncated", "no-header"],
)
def test_broken_pdf_is_refused(tmp_path, data):
    with pytest.raises(ReadError):
        read_document(write(tmp_path, "broken.pdf", data))


# -------------------------------------------------------------- bad input

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x06\x00\x00\x00" + b"\x00" * 64


def _random_bytes(n: int) -> bytes:
    rng = random.Random(42)
    return bytes(rng.randrange(1, 256) for _ in range(n))  # no NUL: detection must refuse


@pytest.mark.parametrize(
    "name, data, reason",
    [
        ("empty.txt", b"", "空のファイル"),
        ("blank.md", b" \n\t\r\n\xe3\x80\x80\n", "空白だけ"),  # includes a full-width space
        ("bom-only.txt", b"\xef\xbb\xbf", "空のファイル"),
        ("image.txt", PNG, "バイナリ"),
        ("random.txt", _random_bytes(2000), ""),
        ("random.html", _random_bytes(2000), ""),
        ("front-only.md", "---\ntitle: 題名だけ\n---\n\n".encode(), "本文がありません"),
        ("header-only.org", "#+TITLE: 題名だけ\n#+AUTHOR: 私\n".encode(), "本文がありません"),
        ("slides.pptx", b"PK\x03\x04", "対応していない形式"),
        ("image.png", PNG, "対応していない形式"),
    ],
)
def test_bad_input_raises_read_error_naming_the_file(tmp_path, name, data, reason):
    p = write(tmp_path, name, data)
    with pytest.raises(ReadError) as err:
        read_document(p)
    assert str(p) in str(err.value)
    assert err.value.path == str(p)
    assert reason in err.value.reason
    assert err.value.exit_code == 5


def test_permission_denied_raises_read_error(tmp_path, monkeypatch):
    p = write(tmp_path, "secret.txt", "秘密のメモ。")

    def denied(file, *args, **kwargs):
        if Path(file) == p:
            raise PermissionError(13, "Permission denied", str(file))
        return builtins.open(file, *args, **kwargs)

    monkeypatch.setattr(readers, "open", denied, raising=False)
    with pytest.raises(ReadError, match="読み取り権限がありません") as err:
        read_document(p)
    assert str(p) in str(err.value)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can read mode 000 files")
def test_unreadable_mode_raises_read_error(tmp_path):
    p = write(tmp_path, "secret.txt", "秘密のメモ。")
    p.chmod(0)
    with pytest.raises(ReadError, match="読み取り権限がありません"):
        read_document(p)


def test_file_deleted_after_listing_raises_read_error(tmp_path):
    p = write(tmp_path, "gone.md", "# 消える\n")
    p.unlink()
    with pytest.raises(ReadError, match="ファイルが見つかりません") as err:
        read_document(p)
    assert str(p) in str(err.value)


def test_symlink_loop_raises_read_error(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(ReadError, match="シンボリックリンクが循環しています") as err:
        read_document(a)
    assert str(a) in str(err.value)


def test_directory_with_a_supported_suffix_raises_read_error(tmp_path):
    d = tmp_path / "folder.md"
    d.mkdir()
    with pytest.raises(ReadError, match="ディレクトリです"):
        read_document(d)
