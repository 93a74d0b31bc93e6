"""Text from a store or a remote, made safe to print.

Whoever can write to a bucket chooses what `batches ls` and `batches show` print: an escape
sequence in a batch.json field could clear the screen, fake colours or set the terminal's
title, and a newline could fake a line of output. Every character that is not printable
(control characters, escape sequences, bidirectional overrides, line separators) is shown as
its Python escape instead, so what a field holds is what the reader sees.
"""

from __future__ import annotations


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(value: object) -> str:
    """`value` as text with every non-printable character escaped (spaces are kept)."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)
