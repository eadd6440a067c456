"""CaseOps v1: the record's reversible case transform, applied to text before tokenization.

Over each maximal run of ASCII letters: a lowercase word stays; an all-capitals word of
two or more letters becomes ALLCAPS + the word lowercased; a capitalised word (first
letter upper, the rest lower, a one-letter capital included) becomes TITLE + the word
lowercased; any other mixed-case word becomes TITLE (only if its first letter is upper)
+ its first letter lowercased, then each further capital is CAPNEXT + that letter
lowercased. A literal control character anywhere in the text is written ESC + itself.
Non-ASCII text is untouched. The four controls are private-use characters
(U+E001..U+E004); a CaseOps tokenizer reserves them as user-defined symbols.

(The issue's summary, "each capital becomes a sentinel, escape by doubling", is looser;
this module follows the record's rules as FACTS.md states them.)

BPB stays on the original text: :func:`original_byte_weights` marks, for each UTF-8
byte of the encoded text, whether it stands for an original byte (1) or is an operator
(0), so per-token byte counts of the original text follow from token spans.

    enc = encode("The NASA iPhone")   # "\\ue001the \\ue002nasa i\\ue003phone"
    assert decode(enc) == "The NASA iPhone"
"""

from __future__ import annotations

import re

import numpy as np

TITLE, ALLCAPS, CAPNEXT, ESC = "\ue001", "\ue002", "\ue003", "\ue004"
CONTROLS = (TITLE, ALLCAPS, CAPNEXT, ESC)
VERSIONS = ("v1",)

_WORD_OR_CONTROL = re.compile(r"[A-Za-z]+|[\ue001-\ue004]")
#: UTF-8 of the controls is EE 80 81..84; "ESC + control" is one operator then one literal.
_OPERATOR_BYTES = re.compile(rb"\xee\x80\x84\xee\x80[\x81-\x84]|\xee\x80[\x81-\x84]")
_ENCODED = re.compile(r"\ue004(.)|\ue002([a-z]+)|\ue001([a-z])|\ue003([a-z])|[\ue001-\ue004]", re.DOTALL)


def _encode_word(word: str) -> str:
    if word in CONTROLS:
        return ESC + word
    if word.islower():
        return word
    if len(word) >= 2 and word.isupper():
        return ALLCAPS + word.lower()
    if word[0].isupper() and (len(word) == 1 or word[1:].islower()):
        return TITLE + word.lower()
    head = (TITLE if word[0].isupper() else "") + word[0].lower()
    return head + "".join(CAPNEXT + c.lower() if c.isupper() else c for c in word[1:])


def encode(text: str) -> str:
    """The CaseOps v1 form of ``text`` (see the module docstring)."""
    return _WORD_OR_CONTROL.sub(lambda m: _encode_word(m.group(0)), text)


def _decode_match(m: re.Match) -> str:
    literal, caps, title, capnext = m.groups()
    if literal is not None:
        return literal
    if caps is not None:
        return caps.upper()
    if title is not None:
        return title.upper()
    if capnext is not None:
        return capnext.upper()
    return ""  # a stray operator (e.g. in generated text) has no meaning: drop it


def decode(text: str) -> str:
    """Invert :func:`encode`: ``decode(encode(t)) == t`` for every string ``t``."""
    return _ENCODED.sub(_decode_match, text)


def original_byte_weights(encoded: str) -> np.ndarray:
    """uint8 per UTF-8 byte of ``encoded``: 1 if it is a byte of the original text, 0 if an operator.

    Every non-operator character of the encoded text stands for one original character of
    the same UTF-8 length (ASCII letters only change case), so the weights sum to the
    original text's UTF-8 length.
    """
    raw = encoded.encode("utf-8")
    weights = np.ones(len(raw), dtype=np.uint8)
    for m in _OPERATOR_BYTES.finditer(raw):  # an escaped literal keeps its weight; its ESC does not
        weights[m.start():m.start() + 3] = 0
    return weights
