"""The language pair comes from the options, else the translator, else the model card; a model that
records none is a user error naming the options."""

from __future__ import annotations

import pytest

from vanilla_transformer.errors import UserError
from vanilla_transformer.serving import LanguagePair, resolve_language_pair

CARD = "---\nlanguage:\n- de\n- fr\nlicense: apache-2.0\n---\n# A model\n"


class Recorded:
    """A translator whose config records its languages (as `engines.Translator` reads them)."""

    source_lang, target_lang = "en", "es"


class Unrecorded:
    source_lang = target_lang = None


def test_the_model_cards_languages_are_the_pair(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "README.md").write_text(CARD)
    assert resolve_language_pair(Unrecorded(), tmp_path) == LanguagePair("de", "fr")


def test_the_translators_languages_come_before_the_card(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "README.md").write_text(CARD)
    assert resolve_language_pair(Recorded(), tmp_path) == LanguagePair("en", "es")


def test_the_options_come_first(tmp_path):
    pair = resolve_language_pair(Recorded(), tmp_path, source="pt", target="ca")
    assert pair == LanguagePair("pt", "ca")
    assert pair.languages()[0] == {"code": "pt", "name": "Portuguese", "targets": ["ca"]}


def test_no_languages_anywhere_is_a_user_error_naming_the_options(tmp_path):
    with pytest.raises(UserError, match="pass --source_lang and --target_lang"):
        resolve_language_pair(Unrecorded(), tmp_path)


def test_the_same_language_twice_is_a_user_error():
    with pytest.raises(UserError, match="both 'en'"):
        resolve_language_pair(Unrecorded(), None, source="en", target="en")
