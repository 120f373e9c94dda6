"""The SLURM backend (submitit): ``backend`` (submit, status, cancel), ``job`` (what runs inside an array task),
``cluster`` (squeue/sacct/scancel), ``state`` (the sweep folder's record of arrays), ``snapshot`` (the code copy
every task runs). Only this package imports submitit."""

# The package imports nothing itself: a task that unpickles a job function must not pay for the backend.
