"""'Did you mean ...?' for misspelt instructions, flags, stages and variables."""

from __future__ import annotations

from collections.abc import Iterable


def _distance(a: str, b: str) -> int:
    """Levenshtein distance: the number of single-character edits from a to b."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def closest(word: str, options: Iterable[str], *, case_sensitive: bool = False) -> str | None:
    """The option nearest to ``word`` if it is near enough to be a plausible typo."""
    if not word:
        return None
    key = word if case_sensitive else word.lower()
    best: tuple[int, str] | None = None
    for option in options:
        candidate = option if case_sensitive else option.lower()
        distance = _distance(key, candidate)
        if best is None or distance < best[0]:
            best = (distance, option)
    if best is None:
        return None
    distance, option = best
    # One edit for short words, up to a third of the word for longer ones.
    return option if distance <= max(1, min(3, len(word) // 3)) else None
