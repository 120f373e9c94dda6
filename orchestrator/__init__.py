"""The sweep orchestrator: YAML sweep → validated spec → trials → backend → engine → MLflow → compare.

Modules (imported on demand; ``import orchestrator`` loads nothing heavy):

* :mod:`orchestrator.spec` — load and validate sweep files (errors carry file, line and key);
* :mod:`orchestrator.expand` — a spec into :class:`~orchestrator.expand.Trial` objects with stable ids
  (``load_sweep(path, overrides)`` does both and reports every problem at once);
* :mod:`orchestrator.tracking` — MLflow (the only module importing it): parent/child runs, ``MlflowReporter``;
* :mod:`orchestrator.trial_runner` — ``run_trial_process(trial, ctx, ...)``, what every backend runs per trial;
* :mod:`orchestrator.backends` — ``get_backend(name)``; ``base.Backend`` is the interface, ``local`` the default;
* :mod:`orchestrator.sweep` — backend-independent submission (idempotent), :mod:`orchestrator.workdir` — the
  working folder and trial state, :mod:`orchestrator.compare`, :mod:`orchestrator.server`, :mod:`orchestrator.cli`.
"""
