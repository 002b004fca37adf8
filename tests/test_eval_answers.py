"""Answer metrics: containment and character F1, checked by hand."""

import pytest

from pipeline.evaluation.answers import char_f1, contains_answer, normalize_answer


@pytest.mark.parametrize(
    "prediction,golds,expected",
    [
        ("既定のポートは１１４３４です。[1]", ["11434"], True),  # full-width digits
        ("東京 タワーの高さは333メートル", ["東京タワー"], True),  # spaces ignored
        ("約4GBです。", ["8GB", "16GB"], False),
        ("資料からは分かりません。", [""], False),  # an empty gold never matches
    ],
)
def test_containment_normalizes_width_and_spaces(prediction, golds, expected):
    assert contains_answer(prediction, golds) is expected


def test_char_f1_by_hand():
    # prediction 「東京都」 vs gold 「東京」: common 2, precision 2/3, recall 1 -> F1 0.8
    assert char_f1("東京都", ["東京"]) == pytest.approx(0.8)
    assert char_f1("大阪", ["東京"]) == 0.0
    assert char_f1("東京", ["大阪", "東京"]) == 1.0


def test_normalize_drops_punctuation_and_brackets():
    assert normalize_answer("「ＡＢＣ」、です。") == "abcです"
