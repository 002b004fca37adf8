"""`embed_precision`: int8 vectors are an index of their own, never mixed with fp32 ones."""

import pytest

from pipeline.errors import ConfigError
from pipeline.index.embedder import embedding_name, load_embedder, settings_for_index
from pipeline.index.snapshot import open_index
from pipeline.ingest.sync import Ingestor, fingerprint
from pipeline.settings import EMBEDDED_EMBED_MODEL, Settings
from tests.conftest import hash_settings


def test_fp32_keeps_the_fingerprint_existing_indexes_were_built_with():
    # An upgrade must not re-embed anyone's notes: fp32 names the model as before.
    assert fingerprint(Settings())["embed_model"] == EMBEDDED_EMBED_MODEL
    assert embedding_name(Settings(embed_precision="int8")) == f"{EMBEDDED_EMBED_MODEL}#int8"
    assert fingerprint(Settings(embed_precision="int8"))["embed_model"] == f"{EMBEDDED_EMBED_MODEL}#int8"


def test_questions_are_embedded_as_the_index_was_whatever_the_setting_says_now():
    fp32_index, int8_index = EMBEDDED_EMBED_MODEL, f"{EMBEDDED_EMBED_MODEL}#int8"
    assert settings_for_index(Settings(embed_precision="int8"), fp32_index).embed_precision == "fp32"
    assert settings_for_index(Settings(), int8_index).embed_precision == "int8"
    assert settings_for_index(Settings(), None).embed_precision == "fp32"  # an index from before the setting
    with pytest.raises(ConfigError, match="hash:256"):
        settings_for_index(Settings(), "hash:256")


def test_int8_is_only_for_the_embedded_model():
    with pytest.raises(ConfigError, match="embed_precision = int8"):
        load_embedder(Settings(embed_model="hash:256", embed_precision="int8"))


def test_an_unknown_precision_is_refused():
    with pytest.raises(Exception, match="embed_precision"):
        Settings(embed_precision="int4")


def test_an_index_is_not_searched_with_vectors_of_another_model(tmp_path, notes):
    settings = hash_settings(tmp_path / "idx")
    Ingestor(settings, tmp_path / "idx").run([notes])
    other = hash_settings(tmp_path / "idx", embed_model="hash:128")
    index = open_index(other)
    with pytest.raises(ConfigError, match="hash:256") as err:
        index.embedder
    assert "hash:128" in str(err.value)
    # Re-ingesting it with the other model says so too, and leaves it as it was.
    with pytest.raises(ConfigError, match="別の埋め込みモデル"):
        Ingestor(other, tmp_path / "idx").run([notes])
    assert open_index(settings).embedder.name == "hash-bigram-256"
