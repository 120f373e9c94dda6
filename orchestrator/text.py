"""Messages for people: the "did you mean" hint and pydantic errors turned into (key, message) pairs. The one
implementation lives in :mod:`convit.text` (the engine's config errors read the same way, and convit may not import
the orchestrator); the sweep language imports them from here."""
from __future__ import annotations

from convit.text import close_matches, did_you_mean, pydantic_message, pydantic_problems, pydantic_text, shorten

__all__ = ["close_matches", "did_you_mean", "pydantic_message", "pydantic_problems", "pydantic_text", "shorten"]
