"""split_text: property tests (hypothesis) and the cut priorities."""
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastdecode import split_text

WORDS = st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Z", "Cc")),
                         min_size=1, max_size=12), min_size=0, max_size=60)
SEPARATORS = st.sampled_from([" ", "  ", ". ", ", ", "! ", "\n", "? ", "; ", "\t"])


@st.composite
def texts(draw):
    words = draw(WORDS)
    return "".join(w + draw(SEPARATORS) for w in words)


def _squash(s: str) -> str:
    return re.sub(r"\s+", "", s)


@settings(max_examples=300, deadline=None)
@given(text=texts(), chunk_length=st.integers(4, 80))
def test_segments_rejoin_and_fit(text, chunk_length):
    segments = split_text(text, chunk_length)
    assert _squash("".join(segments)) == _squash(text)
    for s in segments:
        assert s and s == s.strip()
        assert len(s.encode("utf-8")) <= chunk_length


@settings(max_examples=200, deadline=None)
@given(words=st.lists(st.text(alphabet="abcdefghij", min_size=1, max_size=8), min_size=1,
                      max_size=40), chunk_length=st.integers(8, 60))
def test_short_words_are_never_cut(words, chunk_length):
    """Words no longer than a segment come out whole (a hard cut is only for longer words)."""
    segments = split_text(" ".join(words), chunk_length)
    assert [w for s in segments for w in s.split()] == words


def test_sentence_end_beats_comma_and_space():
    text = "First sentence here. Then a clause, and more words to fill"
    assert split_text(text, 40) == ["First sentence here.", "Then a clause, and more words to fill"]
    assert split_text("alpha beta, gamma delta epsilon", 24) == ["alpha beta,",
                                                                 "gamma delta epsilon"]


def test_numbers_with_points_stay_whole():
    segments = split_text("Pi is about 3.14159 and e is about 2.71828 in value.", 16)
    assert any("3.14159" in s for s in segments) and any("2.71828" in s for s in segments)


def test_hard_cut_and_multibyte_characters():
    assert split_text("x" * 10, 4) == ["xxxx", "xxxx", "xx"]
    segments = split_text("\u00e9" * 5, 4)  # 2 bytes each
    assert segments == ["\u00e9\u00e9", "\u00e9\u00e9", "\u00e9"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="chunk_length must be an integer >= 4"):
        split_text("abc", 0)
    with pytest.raises(ValueError, match="text must be a str"):
        split_text(b"abc", 10)
    assert split_text("   ", 10) == []
