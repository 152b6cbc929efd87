"""The one check every adapter applies before a stored name becomes a path component."""

from __future__ import annotations

import pytest

from davit.domain.names import is_safe_name, unsafe_reason


@pytest.mark.parametrize("name", ["", ".", "..", "/", "/etc", "a/b", "../x", "a\0b", "x/"])
def test_names_that_could_leave_their_directory_are_unsafe_and_say_why(name: str) -> None:
    assert not is_safe_name(name)
    assert unsafe_reason(name)


@pytest.mark.parametrize("name", ["a", "...", ".hidden", "a..b", "ünï cödé", "a%2Fb", "x" * 255, "-rf", "~"])
def test_ordinary_names_including_dots_and_unicode_are_safe(name: str) -> None:
    assert is_safe_name(name) and unsafe_reason(name) is None
