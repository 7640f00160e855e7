"""Query/Retrieve identifiers and attribute matching, as pure functions (PS3.4 Annex C).

Owns two things, and does no I/O:

- the Patient Root and Study Root information models (PS3.4 C.6.1.1 and C.6.2.1): their levels
  and, for each key this archive knows, the level it belongs to, its VR and whether it is the
  level's Unique Key; and the checks an identifier must pass (``parse_query``);
- attribute matching (PS3.4 C.2.2.2): Single Value, List of UID, Universal, Wild Card, Range
  and Empty Value matching of one stored value (``Matcher.matches``).

Rules this module follows, and the few choices the standard leaves to the SCP:

- Hierarchical (baseline) queries, PS3.4 C.4.1.2.1 and C.4.1.3.1.1: every level above the
  query level is identified by its Unique Key with a single value; keys of levels below the
  query level are not allowed. Other keys of levels above are accepted only as return keys
  (zero length, filled from the index); matching on them needs relational queries (C.4.1.2.2),
  which ``relational=True`` allows. Violations answer 0xA900 "Identifier does not match SOP
  Class", as does a Query/Retrieve Level the model does not have (PATIENT in Study Root).
- C-MOVE and C-GET (PS3.4 C.4.2.2.1, C.4.3.2.1): Unique Keys only; a single value for each
  level above the retrieve level, a single value or a list of UIDs at that level. Other keys
  are ignored.
- Matching is case-sensitive, except for PN, where ``MatchOptions.pn_ignore_case`` (default on)
  makes Single Value and Wild Card matching ignore case (C.2.2.2.1 and C.2.2.2.4 let the SCP
  choose for PN). Leading and trailing spaces are padding and never significant.
- A zero-length stored value is "unknown" and matches every matching key (C.2.2.1.2 says so
  for Required Keys; this archive applies it to Optional Keys too), except Empty Value matching
  (a key value of two QUOTATION MARKs), which matches only zero-length stored values.
- A multi-valued key other than a list of UIDs matches if any of its values matches (used for
  Modalities in Study, C.6.1.1.3.1, where a study matches if any of its modalities does).
- Range matching compares DA, TM and DT values at the precision the bound is written in:
  ``-1100`` includes 11:00:59. Time zone offsets of DT values are not taken into account.
- Keys the archive does not index are unsupported Optional Keys: not matched, and returned
  with zero length (C.2.2.1.3).
- One query's work is bounded: Wild Card Matching walks value and pattern without
  backtracking (at most their lengths' product), and a key other than a UID with more than
  ``MAX_KEY_VALUES`` values, or a value over ``MAX_KEY_VALUE_LENGTH`` characters, is refused
  with 0xC000 "Unable to process". A List of UID key may hold any number of UIDs.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

__all__ = [
    "KEYS",
    "Key",
    "Level",
    "MatchOptions",
    "Matcher",
    "Model",
    "Query",
    "QueryError",
    "UNIQUE_KEYS",
    "fold_case",
    "model_for_sop_class",
    "parse_query",
    "parse_retrieve",
    "response_identifier",
    "wildcard_match",
]

#: "Identifier does not match SOP Class" (PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.4).
IDENTIFIER_DOES_NOT_MATCH = 0xA900
#: "Unable to process".
UNABLE_TO_PROCESS = 0xC000

#: Bounds on the matching work one query may ask for, beyond which it is refused with
#: UNABLE_TO_PROCESS rather than served slowly. Wild card matching costs value length x
#: pattern length per stored value and per key value, so both are bounded: the indexed
#: string VRs hold at most 64 characters per value (PN 64 per component group, PS3.5 6.2),
#: and only List of UID Matching (C.2.2.2.2) calls for many values. A UID list is matched
#: by set lookup and SQL, whatever its length.
MAX_KEY_VALUES = 64
MAX_KEY_VALUE_LENGTH = 1024


class QueryError(Exception):
    """An identifier the SCP must refuse; ``status`` is the failure status to answer."""

    def __init__(self, message: str, status: int = IDENTIFIER_DOES_NOT_MATCH) -> None:
        super().__init__(message)
        self.status = status


class Level(enum.IntEnum):
    """Query/Retrieve Level (0008,0052) values, top to bottom (PS3.4 C.6.1.1.1)."""

    PATIENT = 0
    STUDY = 1
    SERIES = 2
    IMAGE = 3


class Model(enum.Enum):
    """The two hierarchical information models this archive serves."""

    PATIENT_ROOT = "PATIENT"
    STUDY_ROOT = "STUDY"

    @property
    def levels(self) -> tuple[Level, ...]:
        if self is Model.PATIENT_ROOT:
            return (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE)
        return (Level.STUDY, Level.SERIES, Level.IMAGE)

    def level_of(self, key: Key) -> Level:
        """The level a key belongs to in this model: Study Root folds patient keys into STUDY."""
        if self is Model.STUDY_ROOT and key.level is Level.PATIENT:
            return Level.STUDY
        return key.level


_MODELS = {
    "1.2.840.10008.5.1.4.1.2.1.1": Model.PATIENT_ROOT,  # FIND
    "1.2.840.10008.5.1.4.1.2.1.2": Model.PATIENT_ROOT,  # MOVE
    "1.2.840.10008.5.1.4.1.2.1.3": Model.PATIENT_ROOT,  # GET
    "1.2.840.10008.5.1.4.1.2.2.1": Model.STUDY_ROOT,
    "1.2.840.10008.5.1.4.1.2.2.2": Model.STUDY_ROOT,
    "1.2.840.10008.5.1.4.1.2.2.3": Model.STUDY_ROOT,
}


def model_for_sop_class(uid: str) -> Model:
    """The information model of a Patient Root or Study Root FIND/MOVE/GET SOP class."""
    try:
        return _MODELS[str(uid)]
    except KeyError:
        raise QueryError(f"{uid} is not a Patient Root or Study Root Q/R SOP class") from None


@attrs.frozen
class Key:
    """A key attribute the archive indexes (PS3.4 Tables C.6-1 to C.6-4)."""

    keyword: str
    level: Level
    vr: str
    unique: bool = False


KEYS: Mapping[str, Key] = {
    k.keyword: k
    for k in (
        Key("PatientID", Level.PATIENT, "LO", unique=True),
        Key("PatientName", Level.PATIENT, "PN"),
        Key("PatientBirthDate", Level.PATIENT, "DA"),
        Key("PatientSex", Level.PATIENT, "CS"),
        Key("NumberOfPatientRelatedStudies", Level.PATIENT, "IS"),
        Key("NumberOfPatientRelatedSeries", Level.PATIENT, "IS"),
        Key("NumberOfPatientRelatedInstances", Level.PATIENT, "IS"),
        Key("StudyInstanceUID", Level.STUDY, "UI", unique=True),
        Key("StudyDate", Level.STUDY, "DA"),
        Key("StudyTime", Level.STUDY, "TM"),
        Key("AccessionNumber", Level.STUDY, "SH"),
        Key("StudyID", Level.STUDY, "SH"),
        Key("StudyDescription", Level.STUDY, "LO"),
        Key("ReferringPhysicianName", Level.STUDY, "PN"),
        Key("ModalitiesInStudy", Level.STUDY, "CS"),
        Key("NumberOfStudyRelatedSeries", Level.STUDY, "IS"),
        Key("NumberOfStudyRelatedInstances", Level.STUDY, "IS"),
        Key("SeriesInstanceUID", Level.SERIES, "UI", unique=True),
        Key("Modality", Level.SERIES, "CS"),
        Key("SeriesNumber", Level.SERIES, "IS"),
        Key("SeriesDescription", Level.SERIES, "LO"),
        Key("NumberOfSeriesRelatedInstances", Level.SERIES, "IS"),
        Key("SOPInstanceUID", Level.IMAGE, "UI", unique=True),
        Key("SOPClassUID", Level.IMAGE, "UI"),
        Key("InstanceNumber", Level.IMAGE, "IS"),
    )
}

UNIQUE_KEYS: Mapping[Level, str] = {k.level: k.keyword for k in KEYS.values() if k.unique}

#: Elements that are part of an identifier but never matched (PS3.4 C.2.2.2, C.4.1.1.3.1).
_NOT_KEYS = frozenset(
    {"QueryRetrieveLevel", "SpecificCharacterSet", "QueryRetrieveView", "TimezoneOffsetFromUTC"}
)

_WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
_RANGE_VRS = frozenset({"DA", "TM", "DT"})
_NUMERIC_VRS = frozenset({"IS", "DS", "US", "UL", "SS", "SL", "FL", "FD"})


@attrs.frozen
class MatchOptions:
    """What the standard leaves to the SCP (stated in its conformance statement)."""

    pn_ignore_case: bool = True
    relational: bool = False


class Kind(enum.Enum):
    UNIVERSAL = "universal"
    SINGLE = "single"
    UID_LIST = "uid-list"
    WILDCARD = "wildcard"
    RANGE = "range"
    EMPTY = "empty"


@attrs.frozen
class Matcher:
    """How one key value matches stored values (PS3.4 C.2.2.2)."""

    kind: Kind
    vr: str
    values: tuple[str, ...] = ()
    #: For RANGE: (lower or "", upper or "") per value.
    ranges: tuple[tuple[str, str], ...] = ()
    ignore_case: bool = False
    #: The values as compared: case-folded per character when ``ignore_case``.
    folded: tuple[str, ...] = attrs.field(default=(), eq=False, repr=False)
    #: For UI keys: the values as a set, so a list of 40,000 UIDs costs one lookup per row.
    value_set: frozenset[str] = attrs.field(default=frozenset(), eq=False, repr=False)

    @classmethod
    def build(cls, vr: str, raw: Sequence[str], *, ignore_case: bool = False) -> Matcher:
        """The matcher for a key of ``vr`` whose values (split at backslashes) are ``raw``."""
        values = tuple(v.strip(" \x00") for v in raw)
        values = tuple(v for v in values if v != "") if len(values) > 1 else values
        if not values or values == ("",) or (vr in _WILDCARD_VRS and values == ("*",)):
            # C.2.2.2.3 and the note of C.2.2.2.4: "*" alone is Universal Matching.
            return cls(Kind.UNIVERSAL, vr)
        if values == ('""',):
            return cls(Kind.EMPTY, vr)
        if vr == "UI":
            kind = Kind.UID_LIST if len(values) > 1 else Kind.SINGLE
            return cls(kind, vr, values, value_set=frozenset(values))
        if vr in _RANGE_VRS:
            # A single date or time is the range [value, value] at the value's precision.
            ranges = tuple(
                _parse_range(v, vr) if _is_range(v, vr) else (_normal(v, vr), _normal(v, vr))
                for v in values
            )
            kind = Kind.RANGE if any(_is_range(v, vr) for v in values) else Kind.SINGLE
            return cls(kind, vr, values, ranges=ranges)
        folded = tuple(fold_case(v) for v in values) if ignore_case else values
        if vr in _WILDCARD_VRS and any(("*" in v or "?" in v) for v in values):
            # A run of "*" is one "*": the same language, and less pattern to walk.
            folded = tuple(re.sub(r"\*+", "*", v) for v in folded)
            return cls(Kind.WILDCARD, vr, values, ignore_case=ignore_case, folded=folded)
        return cls(Kind.SINGLE, vr, values, ignore_case=ignore_case, folded=folded)

    @property
    def is_universal(self) -> bool:
        return self.kind is Kind.UNIVERSAL

    def matches(self, stored: Any) -> bool:
        """Whether a stored value (str, number, list of str for multi-valued, or None) matches."""
        if self.kind is Kind.UNIVERSAL:
            return True
        items = _stored_values(stored)
        if self.kind is Kind.EMPTY:
            return not items
        if not items:
            return True  # zero length: unknown, matches (C.2.2.1.2)
        return any(self._one(item) for item in items)

    def _one(self, stored: str) -> bool:
        vr = self.vr
        if self.kind in (Kind.SINGLE, Kind.UID_LIST) and vr == "UI":
            return stored in self.value_set
        if self.ranges:
            value = _normal(stored, vr)
            return any(_in_range(value, low, high) for low, high in self.ranges)
        if vr in _NUMERIC_VRS and self.kind is Kind.SINGLE:
            return any(_numbers_equal(stored, v) for v in self.values)
        text = fold_case(stored) if self.ignore_case else stored
        if self.kind is Kind.WILDCARD:
            return any(wildcard_match(p, text) for p in self.folded)
        return text in self.folded


def _stored_values(stored: Any) -> list[str]:
    if stored is None:
        return []
    if isinstance(stored, (list, tuple, MultiValue)):
        return [s for s in (str(x).strip(" \x00") for x in stored) if s]
    text = str(stored).strip(" \x00")
    return [text] if text else []


def fold_case(text: str) -> str:
    """``text`` with each character lower-cased on its own, so lengths and positions stay.

    ``str.lower`` turns a few characters into two ("İ"); those are kept as they are, so
    that ``?`` still stands for exactly one character of the stored value.
    """
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


def wildcard_match(pattern: str, value: str) -> bool:
    """Wild Card Matching (PS3.4 C.2.2.2.4): ``*`` any run of characters, ``?`` exactly one.

    No backtracking engine: the pattern splits at ``*`` into segments (in which ``?`` matches
    any one character); the first segment must start the value, the last must end it, and
    each one between is taken at its leftmost place after the one before. Leftmost is always
    safe: any later placement that leads to a match leaves no more room than the leftmost.
    The work is at most len(value) x len(pattern) character comparisons, and a pattern that
    asks for more characters than the value has is refused at once. (A regular expression
    with ``.*`` per ``*`` backtracks exponentially in the number of stars, holding the
    interpreter lock all along, so one query could stall every association.)
    """
    segments = pattern.split("*")
    if len(value) < sum(len(s) for s in segments):
        return False
    if len(segments) == 1:
        return len(pattern) == len(value) and _segment_at(pattern, value, 0)
    first, last = segments[0], segments[-1]
    end = len(value) - len(last)
    if not (_segment_at(first, value, 0) and _segment_at(last, value, end)):
        return False
    pos = len(first)
    for segment in segments[1:-1]:
        found = _find_segment(segment, value, pos, end)
        if found < 0:
            return False
        pos = found + len(segment)
    return pos <= end


def _segment_at(segment: str, value: str, start: int) -> bool:
    """Whether ``segment`` (``?`` for any one character) matches ``value`` at ``start``."""
    if start < 0 or start + len(segment) > len(value):
        return False
    if "?" not in segment:
        return value.startswith(segment, start)
    window = value[start : start + len(segment)]
    return all(p == "?" or p == v for p, v in zip(segment, window, strict=True))


def _find_segment(segment: str, value: str, start: int, end: int) -> int:
    """The leftmost index >= ``start`` where ``segment`` fits wholly before ``end``, or -1."""
    if "?" not in segment:
        return value.find(segment, start, end)
    for i in range(start, end - len(segment) + 1):
        if _segment_at(segment, value, i):
            return i
    return -1


def _numbers_equal(stored: str, wanted: str) -> bool:
    try:
        return float(stored) == float(wanted)
    except ValueError:
        return stored == wanted


#: A DT value with a UTC offset: at least date and hour before the sign (PS3.5 6.2).
_DT_WITH_OFFSET = re.compile(r"(\d{10}[\d.]*)[+-]\d{4}")
_DT_RANGE = re.compile(
    r"(?P<low>\d{10}[\d.]*[+-]\d{4}|[\d.]*)-(?P<high>\d{10}[\d.]*[+-]\d{4}|[\d.]*)"
)


def _is_range(value: str, vr: str) -> bool:
    if vr == "DT":
        return _DT_WITH_OFFSET.fullmatch(value) is None and _DT_RANGE.fullmatch(value) is not None
    return "-" in value


def _parse_range(value: str, vr: str) -> tuple[str, str]:
    """``A-B``, ``A-`` or ``-B`` (PS3.4 C.2.2.2.5) as normalised (low, high); "" is open."""
    if vr == "DT":
        m = _DT_RANGE.fullmatch(value)
        if m is None:
            raise QueryError(f"{value!r} is not a DT range")
        low, high = m.group("low"), m.group("high")
    else:
        if value.count("-") != 1:
            raise QueryError(f"{value!r} is not a {vr} range")
        low, high = value.split("-")
    low, high = _normal(low, vr), _normal(high, vr)
    if not low and not high:
        raise QueryError(f"{value!r}: a range needs at least one bound")
    return low, high


def _normal(value: str, vr: str) -> str:
    """DA/TM/DT text without separators, offsets and padding: comparable as strings."""
    value = value.strip(" \x00")
    if vr == "TM":
        value = value.replace(":", "")
    elif vr == "DA":
        value = value.replace(".", "")  # ACR-NEMA style 2024.01.31
    elif vr == "DT":
        m = _DT_WITH_OFFSET.fullmatch(value)
        if m is not None:
            value = m.group(1)
    return value


def _in_range(value: str, low: str, high: str) -> bool:
    """Inclusive comparison at each bound's precision: ``value[:len(high)] <= high``."""
    if low and _pad(value, len(low)) < low:
        return False
    return not (high and value[: len(high)] > high)


def _pad(value: str, n: int) -> str:
    return value + "0" * (n - len(value)) if len(value) < n else value


# -- identifiers -------------------------------------------------------------------------------


@attrs.frozen
class Condition:
    """One matching key of a query: the stored value of ``keyword`` must match."""

    keyword: str
    level: Level
    matcher: Matcher


@attrs.frozen
class Query:
    """A checked C-FIND identifier, or the unique keys of a C-MOVE/C-GET identifier."""

    model: Model
    level: Level
    conditions: tuple[Condition, ...]
    #: Every key of the request, in order, returned in each response (C.4.1.1.3.2).
    return_keys: tuple[str, ...] = ()
    #: Values of the request's Specific Character Set, if any.
    character_set: tuple[str, ...] = ()

    def unique_values(self, level: Level) -> tuple[str, ...] | None:
        """The UIDs the query gives for ``level``'s unique key (None: not constrained)."""
        keyword = UNIQUE_KEYS[level]
        for cond in self.conditions:
            if cond.keyword == keyword and cond.matcher.kind in (Kind.SINGLE, Kind.UID_LIST):
                return cond.matcher.values
        return None

    def matches(self, row: Mapping[str, Any]) -> bool:
        return all(cond.matcher.matches(row.get(cond.keyword)) for cond in self.conditions)


def _level(identifier: Dataset, model: Model) -> Level:
    raw = identifier.get("QueryRetrieveLevel")
    text = str(raw or "").strip()
    try:
        level = Level[text]
    except KeyError:
        raise QueryError(
            f"Query/Retrieve Level {text!r} is not one of PATIENT, STUDY, SERIES, IMAGE"
        ) from None
    if level not in model.levels:
        raise QueryError(f"the {model.value} root model has no {level.name} level")
    return level


def _raw_values(elem: Any) -> list[str]:
    value = elem.value
    if value is None:
        return []
    if isinstance(value, (list, tuple, MultiValue)):
        return [_text(v) for v in value]
    text = _text(value)
    return [text] if text != "" else []


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)


def _character_set(identifier: Dataset) -> tuple[str, ...]:
    raw = identifier.get("SpecificCharacterSet")
    if raw is None:
        return ()
    if isinstance(raw, (list, tuple, MultiValue)):
        return tuple(str(v) for v in raw)
    return (str(raw),) if str(raw) else ()


def _check_work(keyword: str, matcher: Matcher) -> None:
    """Refuse a non-UID key whose values would make matching unreasonably costly."""
    if matcher.vr == "UI":
        return
    if len(matcher.values) > MAX_KEY_VALUES:
        raise QueryError(
            f"{keyword} has {len(matcher.values)} values; this archive matches at most"
            f" {MAX_KEY_VALUES}",
            UNABLE_TO_PROCESS,
        )
    longest = max((len(v) for v in matcher.values), default=0)
    if longest > MAX_KEY_VALUE_LENGTH:
        raise QueryError(
            f"{keyword} has a value of {longest} characters; this archive matches at most"
            f" {MAX_KEY_VALUE_LENGTH}",
            UNABLE_TO_PROCESS,
        )


def parse_query(identifier: Dataset, model: Model, options: MatchOptions | None = None) -> Query:
    """Check a C-FIND identifier against the model's rules; raise ``QueryError`` if it fails."""
    options = options or MatchOptions()
    level = _level(identifier, model)
    conditions: list[Condition] = []
    return_keys: list[str] = []
    seen_unique: set[Level] = set()
    for elem in identifier:
        if elem.tag.group in (0x0000, 0x0002):
            continue
        keyword = elem.keyword
        if not keyword or keyword in _NOT_KEYS:
            continue
        return_keys.append(keyword)
        key = KEYS.get(keyword)
        if key is None or elem.VR == "SQ":
            continue  # unsupported Optional Key: returned with zero length, never matched
        key_level = model.level_of(key)
        matcher = Matcher.build(
            key.vr, _raw_values(elem), ignore_case=key.vr == "PN" and options.pn_ignore_case
        )
        if key_level > level:
            raise QueryError(
                f"{keyword} is a {key_level.name} key, below the {level.name} query level"
            )
        if key_level < level and not options.relational:
            if key.unique and key.keyword == UNIQUE_KEYS[key_level]:
                if matcher.kind is not Kind.SINGLE:
                    raise QueryError(
                        f"{keyword} identifies the {key_level.name} level above the query level:"
                        " it needs a single value"
                    )
                seen_unique.add(key_level)
            elif not matcher.is_universal:
                raise QueryError(
                    f"matching on {keyword}, a {key_level.name} key above the {level.name} query"
                    " level, needs relational queries"
                )
        if not matcher.is_universal:
            _check_work(keyword, matcher)
            conditions.append(Condition(keyword, key_level, matcher))
    if not options.relational:
        for above in model.levels[: model.levels.index(level)]:
            if above not in seen_unique:
                raise QueryError(
                    f"a hierarchical {level.name} query needs {UNIQUE_KEYS[above]}, the unique"
                    f" key of the {above.name} level"
                )
    return Query(
        model=model,
        level=level,
        conditions=tuple(conditions),
        return_keys=tuple(return_keys),
        character_set=_character_set(identifier),
    )


def parse_retrieve(
    identifier: Dataset, model: Model, options: MatchOptions | None = None
) -> Query:
    """The unique keys of a C-MOVE/C-GET identifier (PS3.4 C.4.2.2.1); others are ignored."""
    options = options or MatchOptions()
    level = _level(identifier, model)
    conditions: list[Condition] = []
    for at in model.levels[: model.levels.index(level) + 1]:
        keyword = UNIQUE_KEYS[at]
        elem = identifier.get(keyword)
        values = _raw_values(identifier[keyword]) if elem is not None else []
        if not values:
            if at < level and options.relational:
                continue
            raise QueryError(f"a {level.name} retrieve needs a value for {keyword}")
        if at < level and len(values) != 1:
            raise QueryError(f"{keyword} above the retrieve level needs a single value")
        vr = KEYS[keyword].vr
        if vr != "UI" and len(values) == 1 and any(c in values[0] for c in "*?"):
            raise QueryError(f"{keyword} cannot use wild cards in a retrieve")
        conditions.append(Condition(keyword, at, Matcher.build(vr, values)))
    return Query(model=model, level=level, conditions=tuple(conditions))


def response_identifier(
    query: Query, row: Mapping[str, Any], *, character_set: Iterable[str] | None = None
) -> Dataset:
    """The C-FIND response identifier for one match: the request's keys, filled from ``row``.

    Includes Query/Retrieve Level and, when needed to decode the values, Specific Character
    Set (PS3.4 C.4.1.1.3.2).
    """
    ds = Dataset()
    texts: list[str] = []
    for keyword in query.return_keys:
        value = row.get(keyword)
        if value is None or value == "" or value == []:
            setattr(ds, keyword, None)
            continue
        if isinstance(value, str):
            texts.append(value)
        setattr(ds, keyword, value)
    ds.QueryRetrieveLevel = query.level.name
    charset = (
        tuple(character_set) if character_set is not None else _pick_character_set(query, texts)
    )
    if charset:
        ds.SpecificCharacterSet = list(charset) if len(charset) > 1 else charset[0]
    return ds


_PYTHON_CODECS = {"": "ascii", "ISO_IR 6": "ascii", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}


def _pick_character_set(query: Query, texts: Sequence[str]) -> tuple[str, ...]:
    """Keep the request's character set if the values fit in it; else Latin-1 or UTF-8."""
    if all(t.isascii() for t in texts):
        return query.character_set
    requested = query.character_set
    if len(requested) == 1 and requested[0] in _PYTHON_CODECS:
        codec = _PYTHON_CODECS[requested[0]]
        if _encodes(texts, codec):
            return requested
    if _encodes(texts, "latin-1"):
        return ("ISO_IR 100",)
    return ("ISO_IR 192",)


def _encodes(texts: Sequence[str], codec: str) -> bool:
    try:
        for t in texts:
            t.encode(codec)
    except UnicodeEncodeError:
        return False
    return True
