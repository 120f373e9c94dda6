"""Exit codes of every command of the project, the same on every door (``python -m convit.train``,
``convit-sweep``, the trial processes the backends start):

====  =================================================================================================
0     success (every trial finished)
1     a trial failed, or a sweep ended with trials unfinished (``convit-sweep status`` says which)
2     bad input (a sweep file, a config, an option): nothing was run, submitted or logged
3     interrupted (a signal, Ctrl-C, ``cancel``): what ran is checkpointed; running it again resumes
====  =================================================================================================
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 3
