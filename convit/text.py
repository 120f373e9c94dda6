"""Messages for people: the "did you mean" hint and pydantic errors turned into (key, message) pairs, written
once so that every refusal reads the same way, a trial config's (convit.config, convit.data) and a sweep file's
(orchestrator.text re-exports these). Torch-free: difflib and pydantic only."""
from __future__ import annotations

import difflib
from typing import Any, Iterable, Sequence

from pydantic import ValidationError


def close_matches(word: str, choices: Iterable[str], n: int = 1, cutoff: float = 0.6) -> list[str]:
    return difflib.get_close_matches(str(word), list(choices), n=n, cutoff=cutoff)


def did_you_mean(word: str, choices: Iterable[str], n: int = 1, cutoff: float = 0.6) -> str:
    """" (did you mean 'x'?)" (or "'x' or 'y'" with n=2) when a choice is close to ``word``, else ""."""
    close = close_matches(word, choices, n=n, cutoff=cutoff)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def pydantic_text(err: dict[str, Any]) -> str:
    """A pydantic error's message without pydantic's "Value error, " prefix (our validators' own sentences)."""
    return str(err["msg"]).removeprefix("Value error, ")


def pydantic_message(err: dict[str, Any]) -> str:
    """One pydantic error as a sentence: :func:`pydantic_text`, plus the rejected input when it is a scalar
    (a type error says what it got)."""
    message = pydantic_text(err)
    if "input" in err and err["type"] != "value_error" and not isinstance(err["input"], (dict, list)):
        message += f" (got {shorten(repr(err['input']))})"
    return message


def shorten(text: str, limit: int = 80) -> str:
    """An echoed value, cut to ``limit`` characters (a 1 MB name must not come back whole)."""
    return text if len(text) <= limit else f"{text[:limit - 15]}... ({len(text):,} chars)"


def pydantic_problems(exc: ValidationError | Sequence[dict[str, Any]],
                      with_input: bool = True) -> list[tuple[str, str]]:
    """(dotted key, message) for every error of a ValidationError (or its ``errors()`` list); ``with_input``
    adds the rejected scalar to type errors (:func:`pydantic_message`)."""
    errors = exc.errors() if isinstance(exc, ValidationError) else exc
    describe = pydantic_message if with_input else pydantic_text
    return [(".".join(str(p) for p in err["loc"]), describe(err)) for err in errors]
