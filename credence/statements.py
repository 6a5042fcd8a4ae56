"""What a person writes for another person to read: a contest's or a review's statement.

Subjects' statements reach agencies' and the registry's operators, who read
them on web pages and terminals; one bound and one rule serve every place
that takes one (registry and node alike).
"""

from __future__ import annotations

import unicodedata

from credence.errors import InvalidInput

__all__ = ["MAX_STATEMENT", "check_statement"]

#: The longest statement, in characters, after trimming.
MAX_STATEMENT = 4000


def check_statement(text: str, *, what: str) -> str:
    """The statement trimmed.

    Control characters other than newline and tab are refused: operators read
    statements on terminals, where an escape sequence would act, not show.

    Args:
        text: the statement as sent.
        what: what it is for, for the error ("a contest", "a review").

    Raises:
        InvalidInput: empty, longer than :data:`MAX_STATEMENT` characters, or
            holding control characters.
    """
    trimmed = text.strip()
    if not trimmed or len(trimmed) > MAX_STATEMENT:
        raise InvalidInput(
            f"{what} needs a statement of 1..{MAX_STATEMENT} characters (got {len(trimmed)})"
        )
    if any(unicodedata.category(char) == "Cc" and char not in "\n\t" for char in trimmed):
        raise InvalidInput(
            f"{what}'s statement holds control characters: send text, lines and tabs only"
        )
    return trimmed
