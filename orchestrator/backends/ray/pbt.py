"""PBT's checkpoint transfer, made explicit: continue another trial's training state under new hyperparameters.

When PBT exploits, trial A restarts from trial B's latest checkpoint with B's config perturbed (say lr x1.2).
The engine resumes exactly, and therefore refuses a checkpoint whose config hash differs from the config it is
given. Rather than weaken that check, the transfer *rebases* the checkpoint onto the new config:

- weights, EMA, optimizer moments, RNG streams, position (epoch/step) and metric history are kept: training
  goes on from where B was, as PBT intends;
- ``config_hash`` becomes the new config's hash, so the engine accepts it;
- the learning rate schedule is rescaled to the new lr (timm's scheduler derives every step's lr from
  ``base_values``; they and the warm-up slopes are multiplied by new_lr/old_lr), so from the next optimizer step
  the lr is exactly what a run of the new config would have at that step;
- ``weight_decay`` is set on the optimizer groups that decay (timm keeps biases and norms in a group with 0).

Other mutable keys (regularisation, augmentation) live in objects the engine rebuilds from the config at every
start, so nothing in the checkpoint refers to them. The engine's checkpoint layout is read here: this is the
one place outside convit/engine that depends on it.
"""
from __future__ import annotations

import copy
from typing import Any

from convit.config import TrialConfig
from orchestrator.keys import flat, get_path, set_path
from orchestrator.sections.ray import MUTABLE_KEYS


def mutated_values(config: TrialConfig, keys: list[str]) -> dict[str, Any]:
    """The current values of ``keys`` (dotted trial keys) in a TrialConfig."""
    data = config.model_dump(mode="json")
    return {key: get_path(data, key) for key in keys}


def with_values(config: TrialConfig, values: dict[str, Any]) -> TrialConfig:
    """A copy of a TrialConfig with dotted keys set (validated again by the engine: its ConfigError names the
    key at fault)."""
    if not values:
        return config
    data = config.model_dump(mode="json")
    for key, value in values.items():
        set_path(data, key, value)
    return TrialConfig.from_dict(data)


def rebase_checkpoint(state: dict[str, Any], old: TrialConfig, new: TrialConfig) -> dict[str, Any]:
    """The engine checkpoint ``state`` of config ``old`` made resumable under config ``new``.

    Only keys in MUTABLE_KEYS may differ between the two configs; anything else raises ValueError.
    """
    changed = _changed_keys(old, new)
    foreign = sorted(set(changed) - set(MUTABLE_KEYS))
    if foreign:
        raise ValueError(f"cannot continue a checkpoint under a config that also changes {', '.join(foreign)}")
    state = dict(state)
    state["config_hash"] = new.config_hash()
    ratio = new.resolve().lr / old.resolve().lr
    optimizer = copy.deepcopy(state["optimizer"])
    for group in optimizer["param_groups"]:
        for field in ("lr", "initial_lr"):
            if field in group:
                group[field] = group[field] * ratio
        if group.get("weight_decay", 0.0) > 0.0:
            group["weight_decay"] = new.weight_decay
        elif new.weight_decay > 0.0 and old.weight_decay == 0.0:
            raise ValueError("cannot turn weight decay on in the middle of a trial that started without it")
    state["optimizer"] = optimizer
    scheduler = dict(state["scheduler"])
    scheduler["base_values"] = [v * ratio for v in scheduler["base_values"]]
    if scheduler.get("warmup_t"):
        init = scheduler["warmup_lr_init"]
        scheduler["warmup_steps"] = [(v - init) / scheduler["warmup_t"] for v in scheduler["base_values"]]
    state["scheduler"] = scheduler
    return state


def _changed_keys(old: TrialConfig, new: TrialConfig) -> list[str]:
    a, b = flat(old.model_dump(mode="json")), flat(new.model_dump(mode="json"))
    return [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
