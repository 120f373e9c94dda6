"""The recipe names a trial hands to timm (its optimizer, its RandAugment string), checked before anything runs.

timm cannot be imported without torch (seconds), and a dry run or a resubmission must not pay for that just to
learn that 'adamw' is an optimizer. So, for the timm version the project is tested with (``TIMM_VERSION``, the one
in constraints.txt), the check answers from what that version is known to accept:

* ``TIMM_OPTIMIZERS`` is ``timm.optim.list_optimizers()`` of that version, in its order (tests/test_cli_speed.py
  asserts that the two are equal, so the list cannot drift from the installed timm unnoticed);
* a RandAugment string made only of the numeric sections timm's ``rand_augment_transform`` parses
  (``rand-m9-mstd0.5-inc1``: ``m``, ``n``, ``mmax``, ``inc`` integers, ``mstd``, ``p`` decimals) is accepted
  (tests/test_cli_speed.py builds timm's transform for such strings to show it is).

Everything else (another timm version, a RandAugment string outside that grammar, e.g. with a ``t`` section, an
AugMix or AutoAugment policy, a typo) is judged by timm itself, as before: the same verdicts and messages.
"""

from __future__ import annotations

import functools
import re
from importlib.metadata import PackageNotFoundError, version

from ..config import TrialConfig
from ..text import did_you_mean
from .errors import DataError

#: The timm release whose names are listed here (constraints.txt pins it).
TIMM_VERSION = "1.0.31"
#: ``timm.optim.list_optimizers()`` of ``TIMM_VERSION``, in its order.
TIMM_OPTIMIZERS = (
    "adabelief", "adadelta", "adafactor", "adafactorbv", "adafactorbvc", "adagrad", "adahessian", "adam", "adamax",
    "adamc", "adamp", "adamuon", "adamw", "adamwlegacy", "adan", "adanw", "adopt", "adoptc", "adoptw", "bnbadam",
    "bnbadam8bit", "bnbadamw", "bnbadamw8bit", "bnbademamix", "bnbademamix8bit", "bnblion", "bnblion8bit", "bnbsgd",
    "bnbsgd8bit", "cadafactor", "cadafactorbv", "cadafactorbvc", "cadamc", "cadamp", "cadamw", "cadan", "cadanw",
    "cadopt", "cadoptc", "cadoptw", "clamb", "clambw", "claprop", "clion", "clionc", "cmars", "cnadamc", "cnadamw",
    "crmsproptf", "csgdc", "csgdp", "csgdw", "fusedadam", "fusedadamw", "fusedlamb", "fusednovograd", "fusedsgd",
    "kron", "kronc", "kronw", "lamb", "lambc", "lambcd", "lambcw", "lambw", "laprop", "lapropc", "larc", "lars",
    "lion", "lionc", "madgrad", "madgradw", "mars", "momentum", "muon", "nadam", "nadamc", "nadamlegacy", "nadamuon",
    "nadamw", "nesterov", "nesterovw", "nlarc", "nlars", "nmuon", "novograd", "novogradc", "novogradw", "radabelief",
    "radam", "radamlegacy", "radamw", "rmsprop", "rmsproptf", "rmsproptfc", "rmsproptfw", "sgd", "sgdc", "sgdp",
    "sgdw",
)
#: RandAugment strings ``rand_augment_transform`` of ``TIMM_VERSION`` parses without error: 'rand', then any number
#: of '-' sections with an integer (m, n, mmax, inc) or a decimal (mstd, p) value.
RAND_NUMERIC = re.compile(r"rand(?:-(?:(?:m|n|mmax|inc)\d+|(?:mstd|p)\d+(?:\.\d+)?))*")


@functools.lru_cache(maxsize=1)
def tested_timm() -> bool:
    """True when the installed timm is ``TIMM_VERSION`` (read from its package metadata, without importing it)."""
    try:
        return version("timm") == TIMM_VERSION
    except PackageNotFoundError:
        return False


def known_optimizers() -> list[str]:
    """timm's optimizer names: the tested list, or the installed timm's own for another version."""
    if tested_timm():
        return list(TIMM_OPTIMIZERS)
    from timm.optim import list_optimizers  # heavy: timm imports torch; only for a timm other than the tested one

    return list_optimizers()


def check_recipe_names(cfg: TrialConfig) -> None:
    """Raise DataError (key ``opt`` or ``randaugment``) for a name timm does not know, which would otherwise only
    fail inside the trial."""
    known = known_optimizers()
    if cfg.opt.lower() not in known:
        hint = (did_you_mean(cfg.opt.lower(), known)
                or f"; e.g. {', '.join(n for n in ('adamw', 'sgd', 'lamb', 'adam') if n in known)}")
        raise DataError(f"optimizer '{cfg.opt}' is not one of timm's{hint}", key="opt")
    if not cfg.randaugment or cfg.no_aug or (tested_timm() and RAND_NUMERIC.fullmatch(cfg.randaugment)):
        return
    from .transforms import train_transform  # heavy: timm, torch; only for a string outside RAND_NUMERIC

    try:
        train_transform(cfg, 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    except (AssertionError, ValueError, KeyError, IndexError) as exc:
        raise DataError(f"randaugment '{cfg.randaugment}' is not a timm RandAugment string "
                        f"({type(exc).__name__}{': ' + str(exc) if str(exc) else ''}); e.g. "
                        "'rand-m9-mstd0.5-inc1', or null for none", key="randaugment") from None
