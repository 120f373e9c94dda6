"""The sweep language: a YAML file (plus ``key=value`` overrides) → a validated :class:`SweepSpec` → trials.

Rooms: ``marks`` (YAML with file:line of every key), ``model`` (the SweepSpec schema), ``overrides`` (the command
line), ``trial_keys`` (keys against the engine's schema), ``checks`` (what needs that schema), ``expand`` (grid ×
zip × random × seeds − exclusions → trials), ``load`` (the three steps, every problem reported in one pass).
"""
from __future__ import annotations

from orchestrator.spec.expand import expand, locate_trial_key, resolve_base, trial_name
from orchestrator.spec.load import load_sweep, parse_spec, parse_spec_partial, read_spec_text
from orchestrator.spec.marks import COMMAND_LINE, Location, Marks
from orchestrator.spec.model import SEED_KEY, VARIANT_KEY, SweepSpec
from orchestrator.spec.trial_keys import check_trial_key, known_trial_keys

__all__ = ["COMMAND_LINE", "Location", "Marks", "SEED_KEY", "SweepSpec", "VARIANT_KEY", "check_trial_key", "expand",
           "known_trial_keys", "load_sweep", "locate_trial_key", "parse_spec", "parse_spec_partial", "read_spec_text",
           "resolve_base", "trial_name"]
