"""The Japanese chunker: budgets, whole sentences, offsets that point back."""

import re

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from pipeline.documents import Document, Section
from pipeline.ingest.chunker import JapaneseChunker
from pipeline.nodes import chunk_to_node, node_to_chunk


def regex_sentences(text):
    return [(m.start(), m.end()) for m in re.finditer(r"[^。\n]+。?", text) if m.group().strip()]


def char_count(text):
    return len(text)


def chunker(budget=40, overlap=0, **kw):
    return JapaneseChunker(
        chunk_tokens=budget, overlap_sentences=overlap, token_counter=char_count,
        sentence_splitter=regex_sentences,
        boundary_finder=lambda t: list(range(0, len(t), 3)), **kw,
    )


def doc(text, **kw):
    base = dict(path="/n/a.md", text=text, title="", format="markdown", encoding="utf-8",
                mtime=0.0, content_hash="h")
    return Document(**{**base, **kw})


def test_sentences_are_packed_whole_up_to_the_budget():
    text = "今日は晴れ。明日は雨。明後日は曇り。" * 3
    spans = chunker(budget=20).split_spans(text)
    for s, e in spans:
        assert e - s <= 20
        assert text[s:e].endswith("。")  # never cut mid-sentence
    assert "".join(text[s:e] for s, e in spans) == text


def test_only_an_over_budget_sentence_is_cut_and_at_a_boundary():
    long = "あ" * 50 + "。"
    spans = chunker(budget=20).split_spans(long)
    assert len(spans) > 1
    assert all(e - s <= 20 for s, e in spans)
    assert all(s % 3 == 0 for s, _ in spans)  # cut points come from boundary_finder


def test_overlap_repeats_the_last_sentence():
    text = "一つ目の文。二つ目の文。三つ目の文。四つ目の文。"
    spans = chunker(budget=14, overlap=1).split_spans(text)
    assert text[spans[1][0] :].startswith("二つ目の文。")


def test_chunk_offsets_and_lines_point_back_into_the_source():
    text = "# 見出し\n\n最初の段落です。二文目です。\n\n## 小見出し\n三行目の内容。\n"
    d = doc(text, sections=(Section(0, ("見出し",)), Section(text.index("## "), ("見出し", "小見出し"))))
    chunks = chunker(budget=30).chunk_document(d)
    assert chunks
    for c in chunks:
        assert text[c.start : c.end] == c.text
        assert c.line_start == text.count("\n", 0, c.start) + 1
        lines = text.split("\n")
        assert c.text.split("\n")[0] in lines[c.line_start - 1]
        assert c.text.split("\n")[-1] in lines[c.line_end - 1]
    # A heading starts a new chunk, so each chunk's heading path is its own.
    assert chunks[-1].text.startswith("## 小見出し")
    assert chunks[-1].heading_path == ("見出し", "小見出し")
    assert all(c.heading_path == ("見出し",) for c in chunks[:-1])


def test_chunk_ids_are_deterministic():
    d = doc("同じ文書です。何度でも同じIDになる。")
    first = [c.id for c in chunker().chunk_document(d)]
    assert len(first) == 1
    assert [c.id for c in chunker().chunk_document(d)] == first


def test_metadata_that_does_not_fit_is_refused_with_numbers():
    d = doc("本文。", title="と" * 200)
    with pytest.raises(ValueError, match="tokens"):
        chunker(budget=40).chunk_document(d)


def test_node_round_trip_keeps_bookkeeping_out_of_embed_text():
    from llama_index.core.schema import MetadataMode

    c = chunker().chunk_document(doc("ノードに変換する。", title="題名"))[0]
    node = chunk_to_node(c)
    assert node_to_chunk(node) == c
    embed_text = node.get_content(metadata_mode=MetadataMode.EMBED)
    assert "line_start" not in embed_text and "doc_hash" not in embed_text


def test_a_node_embeds_the_same_text_rag_ingest_embeds():
    from llama_index.core.schema import MetadataMode

    from pipeline.documents import embed_header

    c = chunker().chunk_document(doc("# 見出し\n\nノードに変換する。", title="題名"))[-1]
    node = chunk_to_node(c)
    assert node.get_content(metadata_mode=MetadataMode.EMBED) == embed_header(c.title, c.heading_path) + "\n" + c.text


def test_chunker_works_as_a_llama_index_node_parser():
    from llama_index.core import Document as LlamaDocument

    text = "一つ目の文。二つ目の文。三つ目の文。四つ目の文。"
    nodes = chunker(budget=14).get_nodes_from_documents([LlamaDocument(text=text, metadata={"file_path": "x.txt"})])
    assert len(nodes) >= 2
    for n in nodes:
        assert text[n.metadata["start"] : n.metadata["end"]] == n.get_content()


JA = st.sampled_from(list("あいうえおかきくけこ日本語文章。、「」！？\n ７Ｂabc"))


@hsettings(max_examples=100, deadline=None)
@given(st.lists(JA, min_size=1, max_size=300).map("".join), st.integers(8, 60), st.integers(0, 2))
def test_chunks_are_verbatim_ordered_and_within_budget(text, budget, overlap):
    d = doc(text)
    spans = chunker(budget=budget, overlap=overlap).split_spans(text)
    starts = [s for s, _ in spans]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    for s, e in spans:
        assert 0 <= s < e <= len(text)
        assert e - s <= budget
    for c in chunker(budget=budget, overlap=overlap).chunk_document(d):
        assert d.text[c.start : c.end] == c.text
