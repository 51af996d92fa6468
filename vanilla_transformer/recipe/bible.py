"""The offline default corpus: the Bible, English -> Spanish, from Debian's SWORD modules.

English is the King James Version (``engKJV2006eb``, default, the closer pair: both it and the
Reina-Valera translate the same source texts in archaic style) or the World English Bible
(``engWEB2015eb``, modern English, a looser pair); Spanish is the Reina-Valera 1909
(``spaRV1909eb``). All three texts are public domain. ``docs/data.md`` in the repository records the facts
about the sources this module relies on.

Pipeline, each step a pure function that tests can feed with captured snippets:

1. ``parse_diatheke_dump``: the output of ``diatheke -f plaintext`` (OSIS markup) -> one
   ``RawVerse`` per reference, multi-line verses joined, the heading that precedes a reference kept
   apart from the verse.
2. ``clean_verse``: markup -> plain text. Drops headings, notes, Strong's numbers and glossary;
   inserts the space lost between adjacent word elements ("unollamadoLázaro" -> "uno llamado
   Lázaro"); removes KJV pilcrows; NFC; single spaces.
3. ``fix_chapter_opening_caps`` (RV 1909: "EN el principio" -> "En el principio") and
   ``strip_acrostic_letter`` (RV 1909 Psalm 119: "ALEPH. Bienaventurados" -> "Bienaventurados");
   the English psalm title, a separate heading in the KJV/WEB, is prepended to verse 1 because the
   RV 1909 keeps it inside verse 1.
4. ``find_misaligned``: the RV 1909 follows the Hebrew verse numbering in about 16
   stretches while claiming the KJV's, so pairing by reference shifts whole chapters by a verse or
   two. A verse is "shifted" when the English verse matches the Spanish verse before or after it
   better than its own; the match is the IDF-weighted overlap of the Strong's numbers both modules
   tag words with (length agreement when there are none). Chapters with a run of shifted verses
   are dropped whole.
5. ``length_ratio_ok``: a character-length ratio filter for what is left.
6. ``split_of_book``: train / validation / test by book, so no test verse shares a chapter with a
   training verse.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
import re
import shutil
import subprocess
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

APT_INSTALL_LINE = "apt-get install -y diatheke sword-text-kjv sword-text-web sword-text-sparv"

ENGLISH_MODULES = {"kjv": "engKJV2006eb", "web": "engWEB2015eb"}
SPANISH_MODULE = "spaRV1909eb"
FULL_RANGE = "Genesis 1:1-Revelation 22:21"

# Held-out books: no numbering problems and few parallel passages elsewhere in the Bible.
TEST_BOOKS = ("Ruth", "Esther", "Ecclesiastes", "Joel", "Philippians", "James")
VALIDATION_BOOKS = ("Judges",)

# Bump when cleaning or filtering changes, so that stale caches are rebuilt.
CORPUS_VERSION = 3

# Elements that hold words: adjacent ones with nothing in between were separated by a note or
# cross-reference that diatheke removed, or glued by the module itself, and need a space.
_WORD_ELEMENTS = frozenset({"w", "transChange", "divineName", "seg", "q", "foreign", "name"})
# Elements dropped with their content: headings, notes, cross-references.
_DROPPED_ELEMENTS_RE = re.compile(
    r"<(title|note|reference|speaker)\b[^>]*>.*?</\1>|<(title|note|reference)\b[^>]*/>", re.S
)
# The WEB attaches its glossary (and the book introduction around it) to Revelation 22:21.
_GLOSSARY_RE = re.compile(r"<div\b[^>]*\btype=\"(glossary|introduction)\"[^>]*>.*", re.S)
_TAG_SPLIT_RE = re.compile(r"(<[^>]*>)")
_TAG_NAME_RE = re.compile(r"<\s*(/?)\s*([A-Za-z][\w:]*)")
_STRONGS_ATTR_RE = re.compile(r"(?:savlm|lemma)=\"([^\"]*)\"")
_STRONGS_NUMBER_RE = re.compile(r"\b([GH])0*(\d+)\b")
_SPACE_BEFORE_PUNCT_RE = re.compile(r"\s+([,.;:!?)\]»])")
_SPACE_AFTER_OPEN_RE = re.compile(r"([(\[«¿¡])\s+")
# A removed note can leave punctuation glued to the next word ("Yahweh,saying" in the WEB); the
# KJV and RV 1909 have no such sequence, so it is always a gluing trace.
_GLUED_AFTER_PUNCT_RE = re.compile(r"([,;:!?]|\.(?=[^\W\d_]{2}))(?=[^\W\d_])")
_PSALM_TITLE_RE = re.compile(r"<title\b[^>]*type=\"psalm\"[^>]*>(.*?)</title>", re.S)
_VERSE_START_RE = re.compile(
    r"^(?P<prefix>.*?)(?P<book>(?:I{1,3} )?[A-Z][A-Za-z]*(?: [A-Za-z()]+)*) "
    r"(?P<chapter>\d+):(?P<verse>\d+): ?"
)
_MODULE_TRAILER_RE = re.compile(r"^\(\w+\)\s*$")
_UPPER_WORD_RE = re.compile(r"^[^\W\d_]{2,}$")
_HEBREW_LETTERS = (
    "ALEPH|BETH|GIMEL|DALETH|HE|VAU|ZAIN|CHETH|TETH|JOD|CAPH|LAMED|MEM|NUN|SAMECH|AIN|PE|TZADDI"
    "|COPH|RESH|SCHIN|SHIN|TAU"
)
_ACROSTIC_RE = re.compile(rf"^(?:{_HEBREW_LETTERS})\b\.?\s*")


@dataclass(frozen=True)
class RawVerse:
    """One verse as diatheke prints it: reference, OSIS markup, and the heading markup before it."""

    book: str
    chapter: int
    verse: int
    markup: str
    prefix: str = ""

    @property
    def ref(self) -> str:
        return f"{self.book} {self.chapter}:{self.verse}"


@dataclass(frozen=True)
class Verse:
    """A cleaned verse and its alignment anchors.

    ``anchors``: tokens comparable across the two sides of a pair, the Strong's numbers of the
    verse's words for a Spanish-English pair (see ``word_anchors`` for an English-English one).
    """

    book: str
    chapter: int
    verse: int
    text: str
    anchors: frozenset[str] = field(default_factory=frozenset)

    @property
    def ref(self) -> str:
        return f"{self.book} {self.chapter}:{self.verse}"


@dataclass(frozen=True)
class VersePair:
    """An English and a Spanish verse under the same reference."""

    en: Verse
    es: Verse

    @property
    def ref(self) -> str:
        return self.en.ref

    @property
    def chapter_key(self) -> tuple[str, int]:
        return (self.en.book, self.en.chapter)


# ----------------------------------------------------------------------------------------------
# Parsing and cleaning (pure)
# ----------------------------------------------------------------------------------------------


def parse_diatheke_dump(dump: str) -> list[RawVerse]:
    """Split ``diatheke -f plaintext`` output into verses.

    A verse starts at a line holding ``Book C:V: `` (possibly after heading markup, which is kept
    in ``prefix``); lines without a reference continue the previous verse (the WEB's poetry).
    The trailing ``(moduleName)`` line is ignored. Repeated references keep the first occurrence.
    """
    verses: list[RawVerse] = []
    seen: set[tuple[str, int, int]] = set()
    current: dict | None = None

    def flush() -> None:
        if current is None:
            return
        key = (current["book"], current["chapter"], current["verse"])
        if key not in seen:
            seen.add(key)
            verses.append(RawVerse(markup=" ".join(current["lines"]).strip(), **_head(current)))

    for line in dump.splitlines():
        if _MODULE_TRAILER_RE.match(line):
            continue
        match = _VERSE_START_RE.match(line)
        # A heading prefix is markup only, so no "<" may be left open in the prefix text.
        if match and _is_markup_prefix(match.group("prefix")):
            flush()
            current = {
                "book": match.group("book"),
                "chapter": int(match.group("chapter")),
                "verse": int(match.group("verse")),
                "prefix": match.group("prefix"),
                "lines": [line[match.end() :]],
            }
        elif current is not None:
            current["lines"].append(line)
    flush()
    return verses


def _head(current: dict) -> dict:
    return {k: current[k] for k in ("book", "chapter", "verse", "prefix")}


def _is_markup_prefix(prefix: str) -> bool:
    """True when everything before the reference is tags, whitespace or heading text."""
    if not prefix.strip():
        return True
    without_titles = _DROPPED_ELEMENTS_RE.sub("", prefix)
    return _TAG_SPLIT_RE.sub("", without_titles).strip() == ""


def extract_strongs(markup: str) -> frozenset[str]:
    """Strong's numbers (``H430``, ``G2316``, zero-padding removed) tagged in a verse's markup."""
    numbers = set()
    for attr in _STRONGS_ATTR_RE.findall(markup):
        numbers.update(f"{k}{n}" for k, n in _STRONGS_NUMBER_RE.findall(attr))
    return frozenset(numbers)


def clean_verse(markup: str) -> str:
    """OSIS markup of one verse -> plain NFC text with single spaces.

    Headings, notes and the WEB glossary are dropped with their content; Strong's numbers in
    angle brackets (``<G4571>``) go with the other tags; a space is inserted where two word
    elements touch with no text between them, the trace of a removed note or of the module's own
    gluing; self-closing elements (line, paragraph, line-break markers) become spaces.
    """
    markup = _GLOSSARY_RE.sub("", markup)
    markup = _DROPPED_ELEMENTS_RE.sub(" ", markup)
    out: list[str] = []
    closed_word = False
    for part in _TAG_SPLIT_RE.split(markup):
        if not part:
            continue
        if not part.startswith("<"):
            out.append(part)
            closed_word = False
            continue
        name_match = _TAG_NAME_RE.match(part)
        if name_match is None:
            continue
        is_close, name = name_match.group(1) == "/", name_match.group(2)
        if part.endswith("/>"):
            out.append(" ")
        elif is_close and name in _WORD_ELEMENTS:
            closed_word = True
        elif not is_close and name in _WORD_ELEMENTS and closed_word:
            out.append(" ")
            closed_word = False
    text = html.unescape("".join(out)).replace("¶", " ")
    return normalize_text(text)


def normalize_text(text: str) -> str:
    """NFC, single spaces, none before closing punctuation or after opening punctuation, one
    after a comma, colon, etc. glued to the next word."""
    text = unicodedata.normalize("NFC", text)
    text = " ".join(text.split())
    text = _SPACE_BEFORE_PUNCT_RE.sub(r"\1", text)
    text = _GLUED_AFTER_PUNCT_RE.sub(r"\1 ", text)
    return _SPACE_AFTER_OPEN_RE.sub(r"\1", text)


def fix_chapter_opening_caps(text: str) -> str:
    """Recase RV 1909's chapter openings: "EN el principio" -> "En el principio".

    The first run of all-capital words (two letters or more; one-letter words like "Y" do not
    break the run) is recased: a word that opens the sentence keeps its capital initial, the
    others are lowercased ("Y FUÉ la vida" -> "Y fué la vida", "¡OH Jehová" -> "¡Oh Jehová").
    Later capitals (inscriptions such as "SANTIDAD Á JEHOVÁ") are left alone.
    """
    tokens = text.split(" ")
    start = None
    for i, token in enumerate(tokens):
        core = token.strip("¿¡\"'“‘(.,;:!?")
        if _UPPER_WORD_RE.match(core) and core.isupper():
            start = i
            break
    if start is None:
        return text
    i = start
    while i < len(tokens):
        token = tokens[i]
        core = token.strip("¿¡\"'“‘(.,;:!?")
        one_letter = len(core) == 1 and core.isupper() and i + 1 < len(tokens)
        if not ((_UPPER_WORD_RE.match(core) and core.isupper()) or one_letter):
            break
        previous = tokens[i - 1] if i > 0 else ""
        opens_sentence = i == 0 or token[0] in "¿¡" or previous.endswith((".", "!", "?", ":"))
        new_core = core.capitalize() if opens_sentence else core.lower()
        tokens[i] = token.replace(core, new_core, 1)
        i += 1
    return " ".join(tokens)


def strip_acrostic_letter(text: str) -> str:
    """Drop the Hebrew letter heading RV 1909 keeps inside Psalm 119's verses ("ALEPH. ...")."""
    return _ACROSTIC_RE.sub("", text, count=1)


def clean_module(raw_verses: Sequence[RawVerse], language: str) -> list[Verse]:
    """Clean every verse of one module; ``language`` is ``"en"`` or ``"es"``.

    English: a psalm title (a heading before verse 1 of its psalm in the KJV and WEB) is
    prepended to verse 1, because RV 1909 keeps it inside verse 1. Diatheke repeats the last
    heading before every later verse of a range dump, so a title counts only where the prefix
    changed. Spanish: chapter-opening capitals and the Psalm 119 acrostic letters are fixed.
    """
    if language not in ("en", "es"):
        raise ValueError(f"language must be 'en' or 'es', got {language!r}")
    verses = []
    previous_prefix = None
    for raw in raw_verses:
        text = clean_verse(raw.markup)
        if language == "en" and raw.book == "Psalms" and raw.verse == 1:
            title = _PSALM_TITLE_RE.search(raw.prefix)
            if title and raw.prefix != previous_prefix:
                text = normalize_text(f"{clean_verse(title.group(1))} {text}")
        if language == "es" and raw.book == "Psalms" and raw.chapter == 119:
            text = strip_acrostic_letter(text)
        if language == "es" and raw.verse == 1:
            text = fix_chapter_opening_caps(text)
        previous_prefix = raw.prefix
        verses.append(Verse(raw.book, raw.chapter, raw.verse, text, extract_strongs(raw.markup)))
    return verses


# ----------------------------------------------------------------------------------------------
# Alignment and filters (pure)
# ----------------------------------------------------------------------------------------------


def pair_by_reference(english: Sequence[Verse], spanish: Sequence[Verse]) -> list[VersePair]:
    """Pair verses with the same (book, chapter, verse), in English order; drop unpaired ones."""
    by_ref = {(v.book, v.chapter, v.verse): v for v in spanish}
    return [
        VersePair(en, by_ref[(en.book, en.chapter, en.verse)])
        for en in english
        if (en.book, en.chapter, en.verse) in by_ref
    ]


def word_anchors(verse: Verse) -> Verse:
    """The verse with its lowercased words (3 letters or more) as anchors.

    Used to align two English versions (WEB against KJV), whose shared vocabulary is a better
    anchor than the WEB's sparse and loose Strong's tagging.
    """
    words = frozenset(w for w in re.findall(r"[^\W\d_]{3,}", verse.text.lower()))
    return Verse(verse.book, verse.chapter, verse.verse, verse.text, words)


def _anchor_idf(pairs: Sequence[VersePair]) -> dict[str, float]:
    counts: Counter[str] = Counter()
    for pair in pairs:
        counts.update(pair.en.anchors)
    n = max(len(pairs), 1)
    return {s: math.log((n + 1) / (c + 1)) + 1.0 for s, c in counts.items()}


def _anchor_similarity(a: frozenset[str], b: frozenset[str], idf: dict[str, float]) -> float:
    """IDF-weighted Jaccard overlap of two sets of Strong's numbers, in [0, 1]."""
    union = a | b
    if not union:
        return 0.0
    weight = sum(idf.get(s, 1.0) for s in union)
    return sum(idf.get(s, 1.0) for s in a & b) / weight


def _length_similarity(en: str, es: str, log_ratio_mean: float) -> float:
    """Closeness of the Spanish/English character-length ratio to its corpus mean, in (0, 1]."""
    if not en or not es:
        return 0.0
    return math.exp(-abs(math.log(len(es) / len(en)) - log_ratio_mean))


@dataclass(frozen=True)
class Misalignment:
    """What ``find_misaligned`` flagged: whole chapters, and refs of isolated shifted verses."""

    chapters: frozenset[tuple[str, int]]
    verses: frozenset[str]


def find_misaligned(
    pairs: Sequence[VersePair],
    max_offset: int = 3,
    margin: float = 0.1,
    min_run: int = 3,
    min_fraction: float = 0.25,
    min_chapter_overlap: float = 0.3,
) -> Misalignment:
    """Chapters, and isolated verses, whose pairing by reference looks shifted.

    For each pair i (in book order, so a shift may cross a chapter boundary) the English verse
    is scored against the Spanish verses i-max_offset .. i+max_offset of the same book. The verse
    is shifted when another one scores more than ``margin`` above its own partner. The score is
    the IDF-weighted overlap of the Strong's numbers when both sides carry them, else the
    agreement of the length ratio with its corpus mean (weaker: neighbours of similar length
    defeat it, which is why it only counts in runs).

    A chapter is flagged whole when it holds ``min_run`` consecutive shifted verses or when at
    least ``min_fraction`` of its verses are shifted: a numbering shift moves every later verse.
    Shorter runs are local differences of verse boundaries (one version puts a clause in the
    next verse); those verses and their neighbours in the chapter are flagged one by one.
    A chapter is also flagged when the median Strong's overlap of its own pairs is below
    ``min_chapter_overlap`` (aligned chapters: 0.45 or more; shifted ones: 0.0-0.3), which
    catches shifts longer than ``max_offset`` (Job 40 is shifted by five verses).
    """
    if not pairs:
        return Misalignment(frozenset(), frozenset())
    idf = _anchor_idf(pairs)
    ratios = [math.log(len(p.es.text) / len(p.en.text)) for p in pairs if p.en.text and p.es.text]
    log_ratio_mean = sum(ratios) / len(ratios) if ratios else 0.0

    def score(en: Verse, es: Verse) -> float:
        if en.anchors and es.anchors:
            return _anchor_similarity(en.anchors, es.anchors, idf)
        return _length_similarity(en.text, es.text, log_ratio_mean)

    shifted, own_overlap = [], []
    for i, pair in enumerate(pairs):
        own = score(pair.en, pair.es)
        own_overlap.append(own if pair.en.anchors and pair.es.anchors else None)
        others = [
            score(pair.en, pairs[j].es)
            for j in range(i - max_offset, i + max_offset + 1)
            if j != i and 0 <= j < len(pairs) and pairs[j].en.book == pair.en.book
        ]
        shifted.append(bool(others) and max(others) > own + margin)

    by_chapter: dict[tuple[str, int], list[int]] = {}
    for i, pair in enumerate(pairs):
        by_chapter.setdefault(pair.chapter_key, []).append(i)
    chapters, verses = set(), set()
    for key, indices in by_chapter.items():
        flags = [shifted[i] for i in indices]
        run = longest = 0
        for flag in flags:
            run = run + 1 if flag else 0
            longest = max(longest, run)
        overlaps = sorted(own_overlap[i] for i in indices if own_overlap[i] is not None)
        low_overlap = bool(overlaps) and overlaps[len(overlaps) // 2] < min_chapter_overlap
        if low_overlap or longest >= min_run or sum(flags) / len(flags) >= min_fraction:
            chapters.add(key)
            continue
        for position, flag in enumerate(flags):
            if flag:
                for k in indices[max(position - 1, 0) : position + 2]:
                    verses.add(pairs[k].ref)
    return Misalignment(frozenset(chapters), frozenset(verses))


def length_ratio_ok(en: str, es: str, min_ratio: float = 0.6, max_ratio: float = 1.9) -> bool:
    """Whether the Spanish/English character-length ratio lies in [min_ratio, max_ratio]."""
    if not en or not es:
        return False
    return min_ratio <= len(es) / len(en) <= max_ratio


def split_of_book(
    book: str,
    test_books: Iterable[str] = TEST_BOOKS,
    validation_books: Iterable[str] = VALIDATION_BOOKS,
) -> str:
    """``"test"``, ``"validation"`` or ``"train"`` for a book name as diatheke prints it."""
    if book in tuple(test_books):
        return "test"
    if book in tuple(validation_books):
        return "validation"
    return "train"


@dataclass
class FilterReport:
    """How many verse pairs each stage kept or removed."""

    english_verses: int = 0
    spanish_verses: int = 0
    paired: int = 0
    empty_side: int = 0
    shifted_chapters: list[str] = field(default_factory=list)
    shifted_pairs: int = 0
    shifted_verses: list[str] = field(default_factory=list)
    length_ratio: int = 0
    kept: int = 0
    per_split: dict[str, int] = field(default_factory=dict)


def align_and_filter(
    english: Sequence[Verse],
    spanish: Sequence[Verse],
    min_ratio: float = 0.6,
    max_ratio: float = 1.9,
    reference: Sequence[Verse] | None = None,
) -> tuple[list[VersePair], FilterReport]:
    """Pair by reference, drop empty sides, misaligned stretches, then out-of-ratio pairs.

    ``reference``: an English version with reliable Strong's tags (the KJV) to detect
    misalignment through when ``english`` has none or loose ones (the WEB). Then a chapter or
    verse is dropped when reference-Spanish looks shifted or when english-reference does
    (compared by shared words).
    """
    report = FilterReport(english_verses=len(english), spanish_verses=len(spanish))
    pairs = pair_by_reference(english, spanish)
    report.paired = len(pairs)
    non_empty = [p for p in pairs if p.en.text and p.es.text]
    report.empty_side = len(pairs) - len(non_empty)
    if reference is None:
        misaligned = find_misaligned(non_empty)
    else:
        via_reference = find_misaligned(
            [p for p in pair_by_reference(reference, spanish) if p.en.text and p.es.text]
        )
        english_pairs = pair_by_reference(
            [word_anchors(v) for v in english], [word_anchors(v) for v in reference]
        )
        between_english = find_misaligned([p for p in english_pairs if p.en.text and p.es.text])
        misaligned = Misalignment(
            via_reference.chapters | between_english.chapters,
            via_reference.verses | between_english.verses,
        )
    report.shifted_chapters = [f"{b} {c}" for b, c in sorted(misaligned.chapters)]
    aligned = [p for p in non_empty if p.chapter_key not in misaligned.chapters]
    report.shifted_pairs = len(non_empty) - len(aligned)
    report.shifted_verses = sorted(p.ref for p in aligned if p.ref in misaligned.verses)
    aligned = [p for p in aligned if p.ref not in misaligned.verses]
    kept = [p for p in aligned if length_ratio_ok(p.en.text, p.es.text, min_ratio, max_ratio)]
    report.length_ratio = len(aligned) - len(kept)
    report.kept = len(kept)
    return kept, report


# ----------------------------------------------------------------------------------------------
# Reading the modules and building the cached corpus
# ----------------------------------------------------------------------------------------------


def _missing_sword_error(what: str) -> RuntimeError:
    return RuntimeError(
        f"{what}. The Bible corpus is read from Debian's SWORD modules; install them with:\n"
        f"    {APT_INSTALL_LINE}"
    )


def read_module(module: str, key: str = FULL_RANGE, diatheke: str = "diatheke") -> str:
    """The ``diatheke -f plaintext`` dump of ``module`` over ``key`` (about 3-6 s per Bible)."""
    if shutil.which(diatheke) is None:
        raise _missing_sword_error(f"The '{diatheke}' program was not found on PATH")
    listing = subprocess.run(
        [diatheke, "-b", "system", "-k", "modulelist"], capture_output=True, text=True, check=True
    ).stdout
    installed = {line.split(" : ")[0].strip() for line in listing.splitlines() if " : " in line}
    if module not in installed:
        raise _missing_sword_error(
            f"SWORD module {module!r} is not installed (found: {sorted(installed) or 'none'})"
        )
    result = subprocess.run(
        [diatheke, "-b", module, "-f", "plaintext", "-k", key],
        capture_output=True,
        check=True,
    )
    return result.stdout.decode("utf-8")


def pairs_to_columns(pairs: Sequence[VersePair]) -> dict[str, list]:
    """Columns of the corpus rows ``{"translation": {"en", "es"}, "ref"}``."""
    return {
        "translation": [{"en": p.en.text, "es": p.es.text} for p in pairs],
        "ref": [p.ref for p in pairs],
    }


def module_version(module: str) -> str | None:
    """The ``Version=`` line of an installed SWORD module's ``.conf`` (None where no conf names
    one), searched where SWORD looks: ``$SWORD_PATH/mods.d``, ``~/.sword/mods.d``,
    ``/usr/share/sword/mods.d``. A module updated by the system changes its version, and so the
    cached corpus's signature."""
    roots = [os.environ.get("SWORD_PATH"), Path.home() / ".sword", "/usr/share/sword"]
    for root in filter(None, roots):
        confs = [Path(root) / "mods.d" / f"{name}.conf" for name in (module, module.lower())]
        conf = next((c for c in confs if c.is_file()), None)
        if conf is not None:
            for line in conf.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.startswith("Version="):
                    return line.split("=", 1)[1].strip()
            return None
    return None


def _build_signature(english: str, min_ratio: float, max_ratio: float) -> dict:
    modules = [ENGLISH_MODULES[english], SPANISH_MODULE]
    if english != "kjv":
        modules.append(ENGLISH_MODULES["kjv"])  # the alignment reference
    return {
        "version": CORPUS_VERSION,
        "modules": {name: module_version(name) for name in modules},
        "english": english,
        "min_ratio": min_ratio,
        "max_ratio": max_ratio,
        "test_books": list(TEST_BOOKS),
        "validation_books": list(VALIDATION_BOOKS),
    }


def build_bible_corpus(
    cache_dir: str | Path,
    english: str = "kjv",
    min_ratio: float = 0.6,
    max_ratio: float = 1.9,
    overwrite: bool = False,
) -> datasets.DatasetDict:
    """Build (once) and load the Bible EN->ES corpus, split by book.

    Args:
        cache_dir: folder holding one sub-folder per English version (``kjv-rv1909``,
            ``web-rv1909``) with the ``save_to_disk`` DatasetDict and its data card README.md.
            An existing build with the same settings is loaded instead of rebuilt.
        english: ``"kjv"`` (King James, default) or ``"web"`` (World English Bible).
        min_ratio, max_ratio: bounds of the Spanish/English character-length ratio.
        overwrite: rebuild even when a matching cache exists.

    Returns:
        ``DatasetDict`` with ``train``, ``validation`` (Judges) and ``test`` (Ruth, Esther,
        Ecclesiastes, Joel, Philippians, James); rows ``{"translation": {"en", "es"}, "ref"}``.

    Raises:
        RuntimeError: ``diatheke`` or a module is missing (the message gives the apt-get line).
    """
    if english not in ENGLISH_MODULES:
        raise ValueError(f"english must be one of {sorted(ENGLISH_MODULES)}, got {english!r}")
    out_dir = Path(cache_dir) / f"{english}-rv1909"
    signature = _build_signature(english, min_ratio, max_ratio)
    signature_file = out_dir / "build.json"
    if not overwrite and signature_file.exists():
        if json.loads(signature_file.read_text()) == signature:
            logger.info("Loading cached Bible corpus from %s", out_dir)
            return datasets.load_from_disk(str(out_dir))
        logger.info("Cached Bible corpus in %s has other settings; rebuilding", out_dir)

    # A build takes a minute or more: one progress step per stage.
    stages = 4 + (english != "kjv")
    with tqdm(total=stages, desc="Bible corpus", unit="stage") as bar:
        bar.set_postfix_str(f"reading {ENGLISH_MODULES[english]}")
        english_verses = clean_module(
            parse_diatheke_dump(read_module(ENGLISH_MODULES[english])), "en"
        )
        bar.update()
        bar.set_postfix_str(f"reading {SPANISH_MODULE}")
        spanish_verses = clean_module(parse_diatheke_dump(read_module(SPANISH_MODULE)), "es")
        bar.update()
        reference = None
        if english != "kjv":
            # The WEB's Strong's tags are too loose to align with; detect through the KJV.
            bar.set_postfix_str(f"reading {ENGLISH_MODULES['kjv']}")
            reference = clean_module(parse_diatheke_dump(read_module(ENGLISH_MODULES["kjv"])), "en")
            bar.update()
        bar.set_postfix_str("aligning and filtering")
        pairs, report = align_and_filter(
            english_verses, spanish_verses, min_ratio, max_ratio, reference=reference
        )
        bar.update()
        bar.set_postfix_str("writing")
        dataset = _save_corpus(pairs, report, out_dir, english, min_ratio, max_ratio)
        signature_file.write_text(json.dumps(signature, indent=2))
        bar.update()
    _write_index_card(Path(cache_dir))
    logger.info("Built Bible corpus in %s: %s", out_dir, report.per_split)
    return dataset


def _save_corpus(pairs, report, out_dir: Path, english: str, min_ratio, max_ratio):
    """Split the pairs by book, save them with `save_to_disk` and write the data card."""
    rows: dict[str, list[VersePair]] = {"train": [], "validation": [], "test": []}
    for pair in pairs:
        rows[split_of_book(pair.en.book)].append(pair)
    report.per_split = {name: len(split) for name, split in rows.items()}
    features = datasets.Features(
        {
            "translation": datasets.Translation(languages=["en", "es"]),
            "ref": datasets.Value("string"),
        }
    )
    dataset = datasets.DatasetDict(
        {
            name: datasets.Dataset.from_dict(pairs_to_columns(split), features=features)
            for name, split in rows.items()
        }
    )
    if out_dir.exists():
        shutil.rmtree(out_dir)
    dataset.save_to_disk(str(out_dir))
    (out_dir / "README.md").write_text(data_card(english, report, min_ratio, max_ratio))
    return dataset


def _write_index_card(cache_dir: Path) -> None:
    """cache_dir/README.md: the data cards of every version built there, one after the other."""
    cards = [p.read_text() for p in sorted(cache_dir.glob("*-rv1909/README.md"))]
    header = (
        "# Bible EN-ES corpus cache\n\nOne folder per English version, each a "
        "`datasets.load_from_disk` DatasetDict with its own card (copied below).\n\n"
    )
    (cache_dir / "README.md").write_text(header + "\n---\n\n".join(cards))


def data_card(english: str, report: FilterReport, min_ratio: float, max_ratio: float) -> str:
    """The corpus' data card (Markdown): source, licence, filters and their counts, splits."""
    module = ENGLISH_MODULES[english]
    split_lines = "\n".join(f"| {name} | {n} |" for name, n in report.per_split.items())
    shifted = ", ".join(report.shifted_chapters) or "none"
    return f"""# Bible EN-ES parallel corpus ({module} -> {SPANISH_MODULE})

Built by `vanilla_transformer.recipe.bible.build_bible_corpus` (corpus version {
        CORPUS_VERSION
    }) from
Debian's SWORD modules (`{APT_INSTALL_LINE}`).

- **English**: `{module}` ({
        "King James Version, archaic, the closer pair"
        if english == "kjv"
        else "World English Bible, modern English, a looser pair"
    }).
- **Spanish**: `{SPANISH_MODULE}`, Reina-Valera 1909. Its Spanish is archaic: "á" as a
  preposition, "fué", "vió", "Jehová", enclitic pronouns ("díjole"). Outputs will learn it.
- **Licence**: the texts are public domain (Debian copyright files); the packaging is GPL-2+.
- **Rows**: `{{"translation": {{"en": ..., "es": ...}}, "ref": "Genesis 1:1"}}`, one verse each.

## Splits (by book: no held-out verse shares a chapter with training)

| split | pairs |
|---|---|
{split_lines}

Test books: {", ".join(TEST_BOOKS)}. Validation: {", ".join(VALIDATION_BOOKS)}.

## Cleaning
OSIS markup, Strong's numbers, headings and the WEB glossary removed; spaces restored between
word elements glued where notes were removed; KJV pilcrows removed; RV 1909 chapter-opening
capitals recased ("EN el principio" -> "En el principio") and Psalm 119 acrostic letters removed;
English psalm titles prepended to verse 1 (RV 1909 keeps them in verse 1); NFC.

## Filters

| stage | pairs |
|---|---|
| English verses | {report.english_verses} |
| Spanish verses | {report.spanish_verses} |
| paired by reference | {report.paired} |
| removed: one side empty | {report.empty_side} |
| removed: chapters with shifted numbering ({len(report.shifted_chapters)} chapters) | \
{report.shifted_pairs} |
| removed: verses at local verse-boundary differences, with neighbours | \
{len(report.shifted_verses)} |
| removed: length ratio es/en outside [{min_ratio}, {max_ratio}] | {report.length_ratio} |
| **kept** | **{report.kept}** |

Chapters dropped as shifted (RV 1909 follows the Hebrew numbering there): {shifted}.
Verses dropped at local boundary differences: {", ".join(report.shifted_verses) or "none"}.
"""


def bible_card_info(english: str = "kjv", data_card: str | None = None) -> dict:
    """The card values that describe the Bible EN->ES corpus (`vanilla_transformer.recipe.bible`):
    dataset name, id and description, intended use, limitations and an example. `data_card` is
    the corpus' README.md text (embedded in the card when given)."""
    english_text = {
        "kjv": "King James Version (archaic English)",
        "web": "World English Bible (modern English)",
    }
    if english not in english_text:
        raise ValueError(f"english must be one of {sorted(english_text)}, got {english!r}.")
    return {
        "src_lang": "en",
        "tgt_lang": "es",
        "dataset_name": f"the Bible, {english_text[english]} → Reina-Valera 1909",
        "dataset_id": f"bible-{english}-rv1909",
        "dataset_config": f"{english}-rv1909",
        "dataset_description": (
            "Verse pairs built from Debian's SWORD modules by `vanilla_transformer.recipe.bible` "
            "(public-domain texts), cleaned of markup, with chapters whose verse numbering differs "
            "between the two editions removed, and split by book: validation is Judges; test is "
            "Ruth, Esther, Ecclesiastes, Joel, Philippians and James, so no test verse shares a "
            "chapter with training."
        ),
        "dataset_card": data_card,
        "intended_use": (
            "A small, reproducible demonstration of the original Transformer recipe: translating "
            "English Bible verses into the Spanish of the Reina-Valera 1909, studying the "
            "architecture, and a starting point for fine-tuning (`scripts/finetune.py`). It is "
            "not a general-purpose English-Spanish translator."
        ),
        "limitations": [
            "Archaic Spanish: the outputs imitate the Reina-Valera 1909 (1909 spelling and "
            'style: "á" as a preposition, "fué", "vió", "Jehová", enclitic pronouns such '
            'as "díjole"), not modern Spanish.',
            "Bible domain only: about 31,000 verse pairs of one text. Names, vocabulary and "
            "phrasing outside the Bible are translated poorly or not at all.",
            "A tiny model trained for a short time on CPU: expect fluent-looking but wrong or "
            "repetitive output, especially for long verses; check the test scores above.",
            "Verse-level training: inputs much longer than a verse (about 90 words) are outside "
            "what it has seen.",
        ],
        "example_source": "In the beginning God created the heaven and the earth.",
    }
