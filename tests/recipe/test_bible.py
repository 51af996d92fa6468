"""The Bible corpus builder on captured diatheke output (no SWORD modules needed), plus one slow
test on the real modules."""

import shutil

import pytest

from vanilla_transformer.recipe import bible
from vanilla_transformer.recipe.bible import (
    APT_INSTALL_LINE,
    Verse,
    VersePair,
    align_and_filter,
    clean_module,
    clean_verse,
    find_misaligned,
    fix_chapter_opening_caps,
    parse_diatheke_dump,
    split_of_book,
)

# Captured from `diatheke -b MODULE -f plaintext -k ...` (Debian bookworm), shortened.
KJV_DUMP = """\
Genesis 1:1: In the <w savlm="strong:H7225">beginning</w> <w savlm="strong:H0430">God</w> \
<w savlm="strong:H1254">created</w> the <w savlm="strong:H8064">heaven</w> \
<w savlm="strong:H0853">and</w> the <w savlm="strong:H0776">earth</w>.
Genesis 1:2: And the <w savlm="strong:H0776">earth</w> <w savlm="strong:H1961">was</w> without \
<w savlm="strong:H8414">form</w>, and <w savlm="strong:H0922">void</w>; and \
<w savlm="strong:H2822">darkness</w> <transChange type="added">was</transChange> upon the face.  \
<div eID="gen3" type="x-p"/>
<title canonical="true" type="psalm">A <w savlm="strong:H4210">Psalm</w> of \
<w savlm="strong:H1732">David</w>.</title> <lg sID="gen2600"/> <l level="1" sID="gen2601"/> \
Psalms 3:1: <divineName><w savlm="strong:H3068">LORD</w></divineName>, how are they \
<w savlm="strong:H7231">increased</w> that trouble me!
<title canonical="true" type="psalm">A <w savlm="strong:H4210">Psalm</w> of \
<w savlm="strong:H1732">David</w>.</title> <lg sID="gen2600"/> <l level="1" sID="gen2601"/> \
Psalms 3:2: <w savlm="strong:H7227">Many</w> <transChange type="added">there be</transChange> \
which say of my soul.
Judges 1:2: And the <w savlm="strong:H3068">LORD</w> said, Judah shall go up.
Ruth 1:3: And Elimelech Naomi’s husband died; and she was left, and her two sons.
<title canonical="true" type="psalm">A <w savlm="strong:H4210">Psalm</w> of \
<w savlm="strong:H1732">David</w>.</title> <lg sID="gen5100"/> <l level="1" sID="gen5101"/> \
Proverbs 1:7: ¶ The <w savlm="strong:H3374">fear</w> of the <divineName>LORD</divineName>.
(engKJV2006eb)
"""

RV_DUMP = """\
Genesis 1:1: <w savlm="strong:H7225">EN el principio</w> <w savlm="strong:H1254">crió</w> \
<w savlm="strong:H0430">Dios</w> <w savlm="strong:H8064">los cielos</w> \
<w savlm="strong:H0776">y la tierra</w>.
John 11:1: <w savlm="strong:G2258">ESTABA</w> <w savlm="strong:G1161">entonces</w> \
<w savlm="strong:G0770">enfermo</w> <w savlm="strong:G5100">uno</w><transChange type="added">llamado</transChange>\
<w savlm="strong:G2976">Lázaro</w>, preguntándo<transChange type="added">le</transChange>.
Psalms 3:1: <w savlm="strong:H4210">Salmo</w> <w savlm="strong:H1732">de David</w>. \
¡<w savlm="strong:H1121">OH</w> <w savlm="strong:H3068">Jehová</w>, cuánto!
Psalms 119:1: ALEPH. <w savlm="strong:H0835">BIENAVENTURADOS</w> los perfectos <G4571>de camino.
Psalms 119:9: BETH ¿Con qué limpiará el joven su camino?
Judges 1:2: Y <w savlm="strong:H3068">Jehová</w> respondió: Judá subirá.
Ruth 1:3: Y murió Elimelech, marido de Noemi, y quedó ella con sus dos hijos;
(spaRV1909eb)
"""

WEB_DUMP = """\
Genesis 1:1: <w savlm="strong:H0430">In</w> the beginning, <w savlm="strong:H0430">God</w>\
<w savlm="strong:H1254">created</w> the heavens.
Psalms 3:2: Many there are who say of my soul,<l eID="gen7863" level="1"/>
“There is no help for him in God.”
Revelation of John 22:21: The grace of the Lord Jesus Christ be with all the saints. Amen.  \
<chapter eID="Rev.22"/> <div sID="gen35837" type="glossary"/> <list> <item><seg>Abba</seg> \
Abba is a Chaldee word for father.</item>
(engWEB2015eb)
"""


def texts(verses):
    return {v.ref: v.text for v in verses}


def test_dump_is_split_into_verses_with_heading_prefixes_apart():
    verses = parse_diatheke_dump(KJV_DUMP)
    assert [v.ref for v in verses] == [
        "Genesis 1:1",
        "Genesis 1:2",
        "Psalms 3:1",
        "Psalms 3:2",
        "Judges 1:2",
        "Ruth 1:3",
        "Proverbs 1:7",
    ]
    assert "<title" in verses[2].prefix and "Psalms" not in verses[2].markup


def test_markup_and_strongs_numbers_are_removed():
    cleaned = texts(clean_module(parse_diatheke_dump(KJV_DUMP), "en"))
    assert cleaned["Genesis 1:1"] == "In the beginning God created the heaven and the earth."
    assert cleaned["Genesis 1:2"] == (
        "And the earth was without form, and void; and darkness was upon the face."
    )
    assert clean_verse("los perfectos <G4571>de camino") == "los perfectos de camino"


def test_kjv_pilcrows_are_removed():
    cleaned = texts(clean_module(parse_diatheke_dump(KJV_DUMP), "en"))
    assert cleaned["Proverbs 1:7"] == "The fear of the LORD."


def test_psalm_title_joins_verse_one_only_where_it_is_fresh():
    cleaned = texts(clean_module(parse_diatheke_dump(KJV_DUMP), "en"))
    assert (
        cleaned["Psalms 3:1"] == "A Psalm of David. LORD, how are they increased that trouble me!"
    )
    assert cleaned["Psalms 3:2"] == "Many there be which say of my soul."


def test_glued_word_elements_get_a_space_but_enclitics_stay_attached():
    cleaned = texts(clean_module(parse_diatheke_dump(RV_DUMP), "es"))
    assert cleaned["John 11:1"] == "Estaba entonces enfermo uno llamado Lázaro, preguntándole."
    web = texts(clean_module(parse_diatheke_dump(WEB_DUMP), "en"))
    assert web["Genesis 1:1"] == "In the beginning, God created the heavens."


def test_punctuation_glued_to_the_next_word_gets_a_space():
    assert clean_verse('Behold,<w savlm="strong:H4194">he</w> travails.') == "Behold, he travails."


def test_multiline_verses_are_joined_and_the_web_glossary_is_dropped():
    web = texts(clean_module(parse_diatheke_dump(WEB_DUMP), "en"))
    assert (
        web["Psalms 3:2"] == "Many there are who say of my soul, “There is no help for him in God.”"
    )
    assert web["Revelation of John 22:21"] == (
        "The grace of the Lord Jesus Christ be with all the saints. Amen."
    )


def test_chapter_opening_capitals_are_recased():
    cleaned = texts(clean_module(parse_diatheke_dump(RV_DUMP), "es"))
    assert cleaned["Genesis 1:1"] == "En el principio crió Dios los cielos y la tierra."
    assert cleaned["Psalms 3:1"] == "Salmo de David. ¡Oh Jehová, cuánto!"
    assert fix_chapter_opening_caps("Y FUÉ la vida de Sara") == "Y fué la vida de Sara"
    assert fix_chapter_opening_caps("¿POR qué estás lejos?") == "¿Por qué estás lejos?"
    assert fix_chapter_opening_caps("SANTIDAD Á JEHOVÁ es") == "Santidad á jehová es"


def test_psalm_119_acrostic_letters_are_removed():
    cleaned = texts(clean_module(parse_diatheke_dump(RV_DUMP), "es"))
    assert cleaned["Psalms 119:1"] == "Bienaventurados los perfectos de camino."
    assert cleaned["Psalms 119:9"] == "¿Con qué limpiará el joven su camino?"


def test_strongs_numbers_are_kept_as_alignment_anchors():
    verses = clean_module(parse_diatheke_dump(RV_DUMP), "es")
    assert verses[0].anchors == {"H7225", "H1254", "H430", "H8064", "H776"}


def synthetic_book(n_chapters=4, verses=12, shift_chapter=None, with_anchors=True):
    """Verse pairs of a made-up book; one chapter's Spanish side shifted by one verse."""
    english, spanish = [], []
    for c in range(1, n_chapters + 1):
        for v in range(1, verses + 1):
            k = c * 100 + v
            length = 20 + (k * 37) % 90  # lengths that vary a lot from verse to verse
            anchors = frozenset({f"H{k}", f"H{k + 5000}", "H430"}) if with_anchors else frozenset()
            english.append(Verse("Book", c, v, "e" * length, anchors))
            spanish.append(Verse("Book", c, v, "s" * length, anchors))
    if shift_chapter is not None:
        rows = [i for i, s in enumerate(spanish) if s.chapter == shift_chapter]
        texts_ = [(spanish[i].text, spanish[i].anchors) for i in rows]
        shifted = [texts_[0]] + texts_[:-1]  # verse v now holds verse v-1's text
        for i, (text, anchors) in zip(rows, shifted, strict=True):
            old = spanish[i]
            spanish[i] = Verse(old.book, old.chapter, old.verse, text, anchors)
    return english, spanish


@pytest.mark.parametrize("with_anchors", [True, False])
def test_a_shifted_chapter_is_detected_and_the_others_kept(with_anchors):
    english, spanish = synthetic_book(shift_chapter=3, with_anchors=with_anchors)
    pairs = [VersePair(e, s) for e, s in zip(english, spanish, strict=True)]
    assert find_misaligned(pairs).chapters == {("Book", 3)}


def test_an_aligned_book_has_no_misaligned_chapters():
    english, spanish = synthetic_book()
    pairs = [VersePair(e, s) for e, s in zip(english, spanish, strict=True)]
    found = find_misaligned(pairs)
    assert not found.chapters and not found.verses


def test_align_and_filter_drops_empty_sides_and_shifted_chapters():
    english, spanish = synthetic_book(shift_chapter=2)
    spanish[0] = Verse("Book", 1, 1, "", frozenset())
    kept, report = align_and_filter(english, spanish)
    assert report.empty_side == 1
    assert report.shifted_chapters == ["Book 2"]
    assert report.shifted_pairs == 12
    assert len(kept) == 48 - 1 - 12 - len(report.shifted_verses) - report.length_ratio


def test_split_is_by_book():
    assert split_of_book("Ruth") == "test"
    assert split_of_book("Judges") == "validation"
    assert split_of_book("Genesis") == "train"


def test_missing_diatheke_error_gives_the_apt_line(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install -y diatheke sword-text-kjv"):
        bible.build_bible_corpus(tmp_path)
    assert "sword-text-sparv" in APT_INSTALL_LINE


def test_build_writes_a_cached_corpus_with_a_data_card(monkeypatch, tmp_path):
    dumps = {"engKJV2006eb": KJV_DUMP, "spaRV1909eb": RV_DUMP}
    calls = []

    def fake_read(module, *args, **kwargs):
        calls.append(module)
        return dumps[module]

    monkeypatch.setattr(bible, "read_module", fake_read)
    corpus = bible.build_bible_corpus(tmp_path)
    # Psalms 3:1 is shortened in the Spanish snippet and falls to the length-ratio filter.
    assert {k: len(v) for k, v in corpus.items()} == {"train": 1, "validation": 1, "test": 1}
    row = corpus["train"][0]
    assert row == {
        "translation": {
            "en": "In the beginning God created the heaven and the earth.",
            "es": "En el principio crió Dios los cielos y la tierra.",
        },
        "ref": "Genesis 1:1",
    }
    card = (tmp_path / "kjv-rv1909" / "README.md").read_text()
    assert "public domain" in card and "archaic" in card and "| train |" in card
    bible.build_bible_corpus(tmp_path)
    assert len(calls) == 2  # the second call loaded the cache


@pytest.mark.slow
def test_real_corpus_builds_with_expected_sizes(tmp_path):
    if shutil.which("diatheke") is None:
        pytest.skip(f"diatheke not installed ({APT_INSTALL_LINE})")
    corpus = bible.build_bible_corpus(tmp_path)
    sizes = {k: len(v) for k, v in corpus.items()}
    assert 29_000 < sizes["train"] < 31_000
    assert 600 <= sizes["validation"] <= 630
    assert 700 <= sizes["test"] <= 780


def test_a_module_updated_by_the_system_changes_the_cached_corpus_signature(tmp_path, monkeypatch):
    mods = tmp_path / "mods.d"
    mods.mkdir()
    conf = mods / f"{bible.SPANISH_MODULE}.conf"
    conf.write_text(f"[{bible.SPANISH_MODULE}]\nDescription=x\nVersion=2.60\n")
    monkeypatch.setenv("SWORD_PATH", str(tmp_path))
    before = bible._build_signature("kjv", 0.6, 1.9)
    assert before["modules"][bible.SPANISH_MODULE] == "2.60"
    conf.write_text(f"[{bible.SPANISH_MODULE}]\nDescription=x\nVersion=2.61\n")
    after = bible._build_signature("kjv", 0.6, 1.9)
    assert after != before  # build_bible_corpus rebuilds when the signature differs
