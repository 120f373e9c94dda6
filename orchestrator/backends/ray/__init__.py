"""The Ray Tune backend: ``backend`` (submit, resume, status, cancel), ``session`` (a private local Ray or a
cluster), ``trainable`` (what runs inside a Tune trial), ``schedulers`` (FIFO, ASHA, PBT), ``pbt`` (moving a
checkpoint onto new hyperparameters). Only this package imports ray."""

# The package imports nothing itself: a task that unpickles a job function must not pay for the backend.
