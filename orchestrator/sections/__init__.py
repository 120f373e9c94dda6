"""Typed sections of a sweep file that say where trials run and where they are tracked.

Each backend's section lives here, validation included (``ray``: scheduler metrics and PBT mutations; ``slurm``:
cluster profiles and the checks that keep values out of the batch script), so the sweep schema never asks a
backend module to judge it. A backend declares the section type it receives (``Backend.section``);
:data:`SECTION_TYPES` maps a backend name to it so that the working folder reads a sweep's options back typed.
"""
from __future__ import annotations

from orchestrator.sections.base import LocalSection, Section, TrackingSection
from orchestrator.sections.ray import RaySchedulerSection, RaySection
from orchestrator.sections.slurm import SlurmSection

SECTION_TYPES: dict[str, type[Section]] = {"local": LocalSection, "ray": RaySection, "slurm": SlurmSection}

__all__ = ["LocalSection", "RaySchedulerSection", "RaySection", "SECTION_TYPES", "Section", "SlurmSection",
           "TrackingSection"]
