"""The sweep orchestrator: YAML sweep → validated spec → trials → backend → engine → MLflow → compare.

The rooms and the rules between them are drawn in docs/ARCHITECTURE.md §3–4. Entry points: ``orchestrator.cli``
(the ``convit-sweep`` command), ``orchestrator.spec.load_sweep(path, overrides)`` (a sweep file to trials, every
problem reported at once) and ``orchestrator.submit.submit_sweep``. ``import orchestrator`` loads nothing heavy.
"""
