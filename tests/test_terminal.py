"""Text from a store is printed with every non-printable character escaped."""

from __future__ import annotations

import pytest

from ensgan.terminal import printable


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain text, spaces and ü", "plain text, spaces and ü"),
        ("\x1b[2J\x1b[31mred", "\\x1b[2J\\x1b[31mred"),  # clear screen, a colour
        ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),  # the window title
        ("one\ntwo\rthree", "one\\x0atwo\\x0dthree"),  # no faked line
        ("\u202eevil", "\\u202eevil"),  # a right-to-left override
        ("\u2028", "\\u2028"),
        ("\U000e0041", "\\U000e0041"),  # a tag character: invisible
    ],
)
def test_printable_escapes_what_a_terminal_would_act_on(text: str, shown: str) -> None:
    assert printable(text) == shown
    assert printable(printable(text)) == printable(text)  # escaped text is printable
