"""The answer phrase put first: the sentence without what it repeats of the question."""

import pytest

from pipeline.answer.phrase import answer_phrase
from pipeline.japanese import default_analyzer


@pytest.mark.parametrize(
    "question, sentence, phrase",
    [
        # The restated question and the copula go; the answer stays.
        ("富士山が世界文化遺産に登録されたのは何年ですか？", "富士山が世界文化遺産に登録されたのは2013年です。[1]", "2013年"),
        ("浅間山が大噴火したのはいつ？", "浅間山が大噴火したのは1783年のことである。[2]", "1783年"),
        # Restated words on both sides of the answer.
        ("その曲はどこの国で初めて演奏された？", "その曲はオーストリアで初めて演奏された。[1]", "オーストリア"),
        # A light verb after the answer (がある) is not part of it.
        ("登山者の安全のために山頂にあるのは", "登山者の安全のために山頂には避難小屋がある。[3]", "避難小屋"),
        # An answer that is already short: only its marker and full stop go.
        ("富士山を詠んだ歌人は？", "山部赤人。[1]", "山部赤人"),
        # The question's 何+counter: the counter belongs to the answer noun.
        ("その山の標高は何メートル？", "その山の標高は3776メートルです。[1]", "3776メートル"),
        ("2013年に登録されたのは何遺産？", "2013年に登録されたのは世界文化遺産です。[1]", "世界文化遺産"),
        # The predicate after the answer goes: the answer is what it takes.
        ("山小屋の数はいくつに達するか", "山小屋の数は40軒に達する。[2]", "40軒"),
        ("山頂の火口を一周することを何と呼ぶか", "山頂の火口を一周することをお鉢巡りと呼ぶ。[1]", "お鉢巡り"),
        # The question's topic said again is cut, a word inside one of its compounds is not.
        ("RAGとは何の略ですか？", "RAGは「Retrieval-Augmented Generation」の略です。[1]", "Retrieval-Augmented Generation"),
        ("石油輸出地域の中東に多いのは何か", "中東は石油が多い。[1]", "石油"),
        # A compound noun the question shares part of is kept whole.
        ("登山者が提出するのは何の届か", "登山者が登山計画届を提出する。[1]", "登山計画届"),
        # Brackets: an aside cut in half is left out, a title cut in half is completed.
        ("富士山が世界遺産になったのはいつ？", "富士山が世界遺産になったのは2013年（平成25年）です。", "2013年"),
        ("富士山を描いた浮世絵は？", "富士山を描いた浮世絵は北斎の『富嶽三十六景』である。[2]", "北斎の『富嶽三十六景』"),
    ],
)
def test_the_phrase_is_what_the_sentence_adds_to_the_question(question, sentence, phrase):
    assert answer_phrase(question, sentence, default_analyzer()) == phrase


def test_a_word_the_question_shares_inside_the_answer_is_kept():
    # 「日本」 is in the question, but alone: part of the answer's names, not a restatement.
    phrase = answer_phrase("日本の山で最も高いのは何山と何山か？", "日本の山で最も高いのは富士山と北岳です。", default_analyzer())
    assert phrase == "富士山と北岳"
    phrase = answer_phrase("日本政治で対立したのはどの党？", "日本共産党と日本社会党です。[1]", default_analyzer())
    assert phrase == "日本共産党と日本社会党"


def test_a_comparison_answer_keeps_the_name_it_chose():
    assert answer_phrase("富士山と浅間山、どちらが高いですか？", "富士山が高い。[1]", default_analyzer()) == "富士山"


def test_a_sentence_that_only_restates_the_question_is_shown_whole():
    question = "富士山と浅間山、どちらが高いですか？"
    assert answer_phrase(question, "富士山と浅間山、どちらが高いです。[1]", default_analyzer()) == "富士山と浅間山、どちらが高いです。"
