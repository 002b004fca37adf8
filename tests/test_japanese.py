"""The Japanese text layer: NFKC offsets, sentences, morphemes, lemmas."""

from __future__ import annotations

import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.japanese import (
    CONTENT_POS,
    DROPPED_POS2,
    STOP_LEMMAS,
    Analyzer,
    Morpheme,
    Normalized,
    default_analyzer,
    normalize,
    split_sentences,
)

REPO = Path(__file__).resolve().parents[1]
SEED = Path(__file__).resolve().parents[2] / "shared" / "seeds" / "notes-llm-ja.txt"


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return default_analyzer()


def sentences(text: str) -> list[str]:
    return [text[s:e] for s, e in split_sentences(text)]


# --------------------------------------------------------------------------
# Sentences
# --------------------------------------------------------------------------

SENTENCE_TESTS = [
    # the seed's ", " / ". " punctuation
    (
        "幻覚. 人工知能によって生成された、虚偽の情報を事実として提示する応答.",
        ["幻覚.", "人工知能によって生成された、虚偽の情報を事実として提示する応答."],
    ),
    (
        "大規模言語モデル(Large Language Model/LLM)とは, 📝自然言語処理(NLP)の一分野.",
        ["大規模言語モデル(Large Language Model/LLM)とは, 📝自然言語処理(NLP)の一分野."],
    ),
    ("AI時代の robots.txt. by 👨Jeremy Haward.", ["AI時代の robots.txt.", "by 👨Jeremy Haward."]),
    # 。 then more text on the same line
    ("学習する。理解する。", ["学習する。", "理解する。"]),
    (
        "文脈を理解できるようになる。これにより、整合性の取れた出力を生成できる.",
        ["文脈を理解できるようになる。", "これにより、整合性の取れた出力を生成できる."],
    ),
    # decimals, versions and URLs are not sentence ends
    ("Claude 3.7 Sonnetは3.5より良い. 次.", ["Claude 3.7 Sonnetは3.5より良い.", "次."]),
    ("比較: https://lmarena.ai/?leaderboard を見る。", ["比較: https://lmarena.ai/?leaderboard を見る。"]),
    ("詳細は https://a.b/c?x=1!y を参照. 以上.", ["詳細は https://a.b/c?x=1!y を参照.", "以上."]),
    ("§1.4 推論パラメータ|Ollamaで体験する国産LLM入門", ["§1.4 推論パラメータ|Ollamaで体験する国産LLM入門"]),
    # full-width digits and the full-width full stop
    ("７Ｂモデルは８ＧＢ程度。１３Ｂは１６ＧＢ。", ["７Ｂモデルは８ＧＢ程度。", "１３Ｂは１６ＧＢ。"]),
    ("これは例である．次に述べる．", ["これは例である．", "次に述べる．"]),
    ("バージョン１．５を使う．", ["バージョン１．５を使う．"]),
    # runs of terminators stay together
    ("本当！？すごい。", ["本当！？", "すごい。"]),
    ("すごい!次へ行こう?", ["すごい!", "次へ行こう?"]),
    # quotes and brackets
    ("彼は「今日は休む。明日行く。」と言った。", ["彼は「今日は休む。明日行く。」と言った。"]),
    ("「行こう。」次の文。", ["「行こう。」", "次の文。"]),
    ("『吾輩は猫である。』の作者。", ["『吾輩は猫である。』の作者。"]),
    ("これは例です（詳細は後述。）次に進む。", ["これは例です（詳細は後述。）", "次に進む。"]),
    ("これは例です。）次へ。", ["これは例です。）", "次へ。"]),
    ("彼は「今日は\n休む。」と言った。", ["彼は「今日は\n休む。」と言った。"]),
    # one missing bracket cannot swallow the document
    ("注意（閉じ忘れ。ここも\n次の行。さらに。", ["注意（閉じ忘れ。ここも", "次の行。", "さらに。"]),
    ("「閉じない引用。\n\n次の段落。終わり。", ["「閉じない引用。", "次の段落。", "終わり。"]),
    # every line break ends a sentence
    ("LLM推論パラメータ\n学習データ量\n", ["LLM推論パラメータ", "学習データ量"]),
    ("<2025-03-11 Tue 08:28>\nDeepSeek誕生の物語は出来すぎている.", ["<2025-03-11 Tue 08:28>", "DeepSeek誕生の物語は出来すぎている."]),
    ("一行目。\r\n二行目。", ["一行目。", "二行目。"]),
    # bullets and headings are one sentence each
    (
        "- 🗣Prompt Tuning: 重み付けを変えない. プロンプトを工夫するアプローチ.",
        ["- 🗣Prompt Tuning: 重み付けを変えない. プロンプトを工夫するアプローチ."],
    ),
    ("- 7B (70億): 8GB程度\n- 13B (130億): 16GB程度", ["- 7B (70億): 8GB程度", "- 13B (130億): 16GB程度"]),
    ("・項目です。続き。\n本文。次。", ["・項目です。続き。", "本文。", "次。"]),
    ("１．最初の項目。二文目。", ["１．最初の項目。二文目。"]),
    ("1. First. Second.\n2) 次。", ["1. First. Second.", "2) 次。"]),
    ("  + 入れ子の項目。その二。", ["+ 入れ子の項目。その二。"]),
    ("- [ ] タスク。メモ。", ["- [ ] タスク。メモ。"]),
    ("# 見出し。です\n本文。", ["# 見出し。です", "本文。"]),
    ("** org の見出し。二\n本文。", ["** org の見出し。二", "本文。"]),
    # whitespace is never part of a sentence
    ("  前の空白。  \n\n\u3000後ろ。  ", ["前の空白。", "後ろ。"]),
    ("", []),
    (" \n\t\u3000\n", []),
]


@pytest.mark.parametrize("text,expected", SENTENCE_TESTS)
def test_sentences_split_as_a_japanese_reader_would(text, expected):
    assert sentences(text) == expected


def test_quote_with_inner_period_is_one_sentence():
    assert sentences("「…休む。」") == ["「…休む。」"]


def test_seed_note_splits_into_lines_and_sentences():
    text = SEED.read_text(encoding="utf-8")
    got = sentences(text)
    assert "幻覚." in got
    assert "<2025-03-11 Tue 08:28>" in got
    assert "§1.4 推論パラメータ|Ollamaで体験する国産LLM入門" in got
    assert "- Chatbot Arena LLM Leaderboard: https://lmarena.ai/?leaderboard" in got
    assert all("\n" not in s for s in got)


@pytest.mark.parametrize(
    "text", [t for t, _ in SENTENCE_TESTS if t.strip()] + [SEED.read_text(encoding="utf-8")]
)
def test_sentence_splits_fall_on_morpheme_boundaries(analyzer, text):
    morphemes = analyzer.morphemes(text)
    starts = {m.start for m in morphemes}
    ends = {m.end for m in morphemes}
    spans = split_sentences(text)
    assert spans
    for s, e in spans:
        assert s in starts, (s, text[s : s + 10])
        assert e in ends, (e, text[e - 10 : e])


def test_analyzer_sentences_agree_with_split_sentences_on_real_text(analyzer):
    for text in [t for t, _ in SENTENCE_TESTS] + [SEED.read_text(encoding="utf-8")]:
        assert analyzer.sentences(text) == split_sentences(text)


def test_sentence_end_glued_to_a_symbol_by_mecab_is_not_cut(analyzer):
    # MeCab reads "。-" at the start of a text as one unknown symbol token.
    assert split_sentences("。-") == [(0, 1), (1, 2)]
    assert analyzer.sentences("。-") == [(0, 2)]


# --------------------------------------------------------------------------
# NFKC with offsets
# --------------------------------------------------------------------------

NORMALIZE_TESTS = [
    ("㍻31年", "平成31年"),
    ("①②", "12"),
    ("ＡＢＣ１２３", "ABC123"),
    ("ｶﾞｷﾞｸﾞﾊﾟｿｺﾝ", "ガギグパソコン"),
    ("か\u3099", "が"),
    ("e\u0301", "é"),
    ("７Ｂ（７０億）：８ＧＢ程度", "7B(70億):8GB程度"),
    ("<2025-03-11 Tue 08:28>", "<2025-03-11 Tue 08:28>"),
    ("全角\u3000スペース", "全角 スペース"),
    ("🤖ＬＬＭ\n📝ﾃｷｽﾄ", "🤖LLM\n📝テキスト"),
    ("", ""),
]


@pytest.mark.parametrize("text,expected", NORMALIZE_TESTS)
def test_normalize_is_nfkc(text, expected):
    got = normalize(text)
    assert got.text == expected == unicodedata.normalize("NFKC", text)
    assert len(got.offsets) == len(got.ends) == len(got.text)


def test_normalized_offsets_point_back_to_original():
    original = "㍻３１年ｶﾞｽ代"
    got = normalize(original)
    assert got.text == "平成31年ガス代"
    assert got.offsets == (0, 0, 1, 2, 3, 4, 6, 7)
    assert got.to_original(0, 2) == (0, 1)  # 平成 <- ㍻
    assert got.to_original(2, 4) == (1, 3)  # 31 <- ３１
    assert got.to_original(5, 6) == (4, 6)  # ガ <- ｶﾞ
    assert original[slice(*got.to_original(5, 7))] == "ｶﾞｽ"
    assert got.to_original(0, len(got.text)) == (0, len(original))


def test_to_original_handles_empty_spans_and_the_end():
    got = normalize("ＡＢ")
    assert got.to_original(2, 2) == (2, 2)
    assert got.to_original(1, 1) == (1, 1)
    with pytest.raises(ValueError):
        got.to_original(1, 3)


def test_normalized_is_a_frozen_value():
    got = normalize("ＡＢ")
    assert isinstance(got, Normalized)
    with pytest.raises(AttributeError):
        got.text = "x"  # type: ignore[misc]


# --------------------------------------------------------------------------
# Morphemes
# --------------------------------------------------------------------------

MORPHEME_TEXTS = [
    "走った 走ります\n走らない",
    "🤖LLM Agnets\n\n  🗣PEFT",
    "- Chatbot Arena: https://lmarena.ai/?leaderboard",
    "<2025-03-11 Tue 08:28>\nDeepSeek誕生の物語",
    "全角\u3000スペースと\tタブ\r\n改行\r🤖",
    "ｶﾞｷﾞ ７Ｂ ㍻",
    "NUL\x00を含む",
]


@pytest.mark.parametrize("text", MORPHEME_TEXTS)
def test_morpheme_offsets_slice_back_to_surfaces(analyzer, text):
    morphemes = analyzer.morphemes(text)
    assert morphemes
    pos = 0
    for m in morphemes:
        assert isinstance(m, Morpheme)
        assert text[m.start : m.end] == m.surface
        assert m.start >= pos
        # only whitespace (and NUL, which MeCab cannot read) is skipped
        assert text[pos : m.start].replace("\x00", "").strip() == ""
        pos = m.end
    assert text[pos:].strip() == ""


@pytest.mark.parametrize("text", ["", " \n\t\u3000\n"])
def test_empty_or_blank_text_has_no_morphemes_sentences_or_tokens(analyzer, text):
    assert analyzer.morphemes(text) == []
    assert analyzer.sentences(text) == [] == split_sentences(text)
    assert analyzer.count_tokens(text) == 0


WHITESPACE = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]


@pytest.mark.parametrize("blank", WHITESPACE, ids=[f"U+{ord(c):04X}" for c in WHITESPACE])
def test_every_kind_of_whitespace_separates_morphemes(analyzer, blank):
    assert [m.surface for m in analyzer.morphemes(f"あ{blank}🤖")] == ["あ", "🤖"]


def test_morphemes_carry_lemma_and_part_of_speech(analyzer):
    got = [(m.surface, m.lemma, m.pos1) for m in analyzer.morphemes("ユーザーがモデルを書いた")]
    assert got == [
        ("ユーザー", "ユーザー", "名詞"),  # unidic: ユーザー-user
        ("が", "が", "助詞"),
        ("モデル", "モデル", "名詞"),  # unidic: モデル-model
        ("を", "を", "助詞"),
        ("書い", "書く", "動詞"),
        ("た", "た", "助動詞"),
    ]


def test_unknown_words_use_their_surface_as_lemma(analyzer):
    assert [m.lemma for m in analyzer.morphemes("Ollama")] == ["Ollama"]


def test_morpheme_boundaries_are_token_starts(analyzer):
    text = "大規模言語モデル。 LLM"
    assert analyzer.morpheme_boundaries(text) == [0, 1, 3, 5, 8, 10]


@pytest.mark.parametrize("text", MORPHEME_TEXTS + ['引用 "a,b" と ,， 한국어 ｗｗｗ EOS\nEOS'])
def test_fast_paths_agree_with_the_morphemes(analyzer, text):
    """Boundaries and lemmas come from taggers printing one line per token, not from node
    objects: they must read the same tokens (quoted commas, unknown words, blanks, "EOS")."""
    morphemes = analyzer.morphemes(text)
    assert analyzer.morpheme_boundaries(text) == [m.start for m in morphemes]
    norm = unicodedata.normalize("NFKC", text)
    words = [
        (m.surface if m.pos2 == "固有名詞" else m.lemma)
        for m in analyzer.morphemes(norm)
        if m.pos1 in CONTENT_POS and m.pos2 not in DROPPED_POS2
    ]
    expected = [w.lower() for w in words if w not in STOP_LEMMAS and w.strip()]
    assert analyzer.content_lemmas(text) == expected


def test_count_tokens_matches_surfaces(analyzer):
    text = "７Ｂモデルは８ＧＢ程度。"
    assert analyzer.count_tokens(text) == len(analyzer.surfaces(text)) == len(analyzer.morphemes(text))
    assert analyzer.surfaces("走った") == ["走っ", "た"]
    assert analyzer.count_tokens("") == 0


# --------------------------------------------------------------------------
# Content lemmas
# --------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["走った", "走ります", "走らない", "走れば", "走る"])
def test_inflected_verbs_share_a_lemma(analyzer, text):
    assert analyzer.content_lemmas(text) == ["走る"]


CONTENT_LEMMA_TESTS = [
    ("書かれた本", ["書く", "本"]),
    ("LLMとOllamaで推論する", ["llm", "ollama", "推論"]),
    ("７Ｂモデルは８ＧＢ程度", ["7", "b", "モデル", "8", "gb", "程度"]),
    ("2025年から話題になった", ["2025", "年", "話題"]),
    ("美しい花が静かに咲く", ["美しい", "花", "静か", "咲く"]),
    ("東京に行く", ["東京", "行く"]),  # proper noun keeps its surface, not トウキョウ
    ("§1.4 推論パラメータ|Ollamaで体験する国産LLM入門", ["1", "4", "推論", "パラメーター", "ollama", "体験", "国産", "llm", "入門"]),
    ("<2025-03-11 Tue 08:28>", ["2025", "03", "11", "tue", "08", "28"]),
    ("https://lmarena.ai/?leaderboard", ["https", "lmarena", "ai", "leaderboard"]),
    ("とても速い", ["迚も", "早い"]),  # adverbs kept; unidic lemmas merge spellings
]


@pytest.mark.parametrize("text,expected", CONTENT_LEMMA_TESTS)
def test_content_lemmas_keep_content_words(analyzer, text, expected):
    assert analyzer.content_lemmas(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "これはそのことです",  # pronoun, adnominal, formal noun こと, copula
        "することがある",  # 為る, 事, 有る
        "している",  # 為る, 居る
        "できるようになる",  # 出来る, 様, 成る
        "ものがない",  # 物, 無い
        "しかし、ああ、そう。",  # conjunction, interjection, demonstrative adverb
        "、。「」！？🤖",  # symbols
    ],
)
def test_function_words_and_light_verbs_are_dropped(analyzer, text):
    assert analyzer.content_lemmas(text) == []


def test_prefixes_and_suffixes_are_dropped(analyzer):
    assert analyzer.content_lemmas("お茶と山田さんの研究者的な性質") == ["茶", "山田", "研究", "性質"]


def test_stop_lemmas_are_unidic_lemmas():
    assert {"為る", "有る", "居る", "成る", "事", "物"} <= STOP_LEMMAS


# --------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------

ALPHABET = (
    "あいうえおかきくけこさしすのはがをにでとっ"  # hiragana
    "日本語学習文章人工知能東京走書読言葉"  # kanji
    "アイウエオカキクケコ"  # katakana
    "０１２３７ＡＢＣｂ"  # full-width digits/latin
    "ｶｷｸﾞﾟｱﾝｰ｡"  # half-width katakana and voicing marks
    "abcXYZ0123"
    "。、「」『』（）()！？．.!?,:/-#*・"
    "\n\n\r\t   \u3000"
    "🤖📝😛"
    "㍻①\u3099"
)
japanese_ish = st.text(alphabet=ALPHABET, max_size=120)


@settings(max_examples=100, deadline=None)
@given(japanese_ish)
def test_sentence_spans_are_ordered_stripped_and_cover_the_text(text):
    spans = split_sentences(text)
    pos = 0
    for s, e in spans:
        assert pos <= s < e <= len(text)
        assert text[s:e] == text[s:e].strip()
        pos = e
    covered = set()
    for s, e in spans:
        covered.update(range(s, e))
    assert all(ch.isspace() for i, ch in enumerate(text) if i not in covered)


@settings(max_examples=100, deadline=None)
@given(japanese_ish)
def test_normalized_offsets_are_monotonic_and_cover_the_original(text):
    got = normalize(text)
    assert got.text == unicodedata.normalize("NFKC", text)
    assert len(got.offsets) == len(got.text)
    assert list(got.offsets) == sorted(got.offsets)
    assert all(o < e <= len(text) for o, e in zip(got.offsets, got.ends))
    if text:
        assert got.to_original(0, len(got.text)) == (0, len(text))


@settings(max_examples=100, deadline=None)
@given(japanese_ish)
def test_generated_morpheme_offsets_slice_back_to_surfaces(text):
    analyzer = default_analyzer()
    pos = 0
    for m in analyzer.morphemes(text):
        assert text[m.start : m.end] == m.surface
        assert pos <= m.start
        assert text[pos : m.start].strip() == ""  # only whitespace is skipped
        pos = m.end
    assert text[pos:].strip() == ""


@settings(max_examples=100, deadline=None)
@given(japanese_ish)
def test_analyzer_sentences_never_cut_inside_a_morpheme(text):
    analyzer = default_analyzer()
    morphemes = analyzer.morphemes(text)
    starts = {m.start for m in morphemes}
    ends = {m.end for m in morphemes}
    pos = 0
    for s, e in analyzer.sentences(text):
        assert pos <= s < e <= len(text)
        assert text[s:e] == text[s:e].strip()
        assert s in starts and e in ends
        assert text[pos:s].strip() == ""  # nothing but whitespace falls between sentences
        pos = e
    assert text[pos:].strip() == ""


# --------------------------------------------------------------------------
# Import cost
# --------------------------------------------------------------------------


def test_importing_the_module_does_not_import_fugashi():
    code = "import sys, pipeline.japanese; print('fugashi' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"

