"""Exit codes of every command of the project, the same on every door (``python -m convit.train``,
``convit-sweep``, the trial processes the backends start):

====  =================================================================================================
0     success (every trial finished)
1     a trial failed, or a sweep ended with trials failed or stopped (Ctrl-C or ``cancel`` during
      ``convit-sweep submit``: each trial checkpointed first; ``convit-sweep status`` says which)
2     bad input (a sweep file, a config, an option, a busy or unusable trial folder): nothing was run,
      submitted or logged
3     one trial's process (``python -m convit.train``, a backend's trial runner) was interrupted by a
      signal after an exact checkpoint: running it again resumes
141   ``convit-sweep``'s output went to a reader that stopped early (``| head -1``): ended quietly, as
      ``cat`` does (128 + SIGPIPE, what a shell reports for such a command)
====  =================================================================================================
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 3
EXIT_CLOSED_PIPE = 141
