"""Bad input is refused whole: every case of the fuzz corpus (tests/fuzz/corpus.py: undecodable bytes, control
characters, alias bombs, deep nesting, huge files and numbers, NaN/inf, booleans for numbers, runaway trial counts,
empty or baseless documents, exclude values that match nothing) exits 2 with one located message, no traceback,
nothing written, in seconds. Property-based (hypothesis): generated valid sweeps expand deterministically with
stable ids whatever the key order, and generated mutations never end in anything but a trial list or SpecError."""
from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import cli
from orchestrator.errors import SpecError
from orchestrator.spec import expand, load_sweep, parse_spec
from tests.fuzz.corpus import CASES


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_refused_whole(tmp_path: Path, capsys, name: str):
    data, overrides = CASES[name]
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(data)
    work = tmp_path / "runs"
    start = time.perf_counter()
    code = cli.main(["submit", str(path), "--dry-run", "--workdir", str(work), *overrides])
    took = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error:") and "Traceback" not in err
    lines = err.splitlines()
    first = lines[1].strip() if len(lines) > 1 else lines[0].removeprefix("error:").strip()
    # located: the file (and line), the command line, or (a backend's refusal) the section key
    assert first.startswith((str(path), "<command line>", "local.", "ray.", "slurm.")), err
    assert len(err) < 5000  # echoed values are cut short
    assert not work.exists()
    assert took < 15, f"{took:.1f} s to refuse"


def test_an_empty_model_kwargs_keeps_the_presets_settings():
    spec = parse_spec("name: e\nbase: {preset: smoke, model_kwargs: {}}\n")
    (trial,) = expand(spec)
    assert trial.config.model_kwargs["img_size"] == 32  # merged nothing, replaced nothing


def test_yaml_1_2_exponents_are_numbers_that_exclude_rules_match():
    spec = parse_spec("name: e\nbase: {preset: smoke}\ngrid: {lr: [1e-3, 5.0e-4]}\nexclude: [{lr: 0.001}]\n")
    assert [t.config.lr for t in expand(spec)] == [5e-4]


# ------------------------------------------------------------------------------------------------ properties
KEYS = {"lr": st.floats(1e-5, 1e-2, allow_nan=False), "weight_decay": st.floats(0.0, 0.1, allow_nan=False),
        "model_kwargs.drop_path_rate": st.floats(0.0, 0.5, allow_nan=False),
        "label_smoothing": st.floats(0.0, 0.3, allow_nan=False)}


@st.composite
def sweeps(draw: st.DrawFn) -> dict:
    keys = draw(st.lists(st.sampled_from(sorted(KEYS)), min_size=1, max_size=3, unique=True))
    grid = {k: draw(st.lists(KEYS[k], min_size=1, max_size=3, unique=True)) for k in keys}
    seeds = draw(st.lists(st.integers(0, 1000), min_size=1, max_size=3, unique=True))
    return {"name": "prop", "base": {"preset": "smoke", "epochs": 1}, "grid": grid, "seeds": seeds}


def _ids(doc: dict) -> list[str]:
    return [t.id for t in expand(parse_spec(yaml.safe_dump(doc, sort_keys=False)))]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sweeps(), st.randoms(use_true_random=False))
def test_valid_sweeps_expand_deterministically_whatever_the_key_order(doc: dict, rnd):
    ids = _ids(doc)
    distinct_points = math.prod(len(v) for v in doc["grid"].values()) * len(doc["seeds"])
    assert len(ids) == distinct_points == len(set(ids))
    shuffled = dict(doc)
    keys = list(doc["grid"])
    rnd.shuffle(keys)
    shuffled["grid"] = {k: doc["grid"][k] for k in keys}
    shuffled = dict(reversed(list(shuffled.items())))
    assert sorted(_ids(shuffled)) == sorted(ids) and _ids(doc) == ids  # same set; same order for the same file


JUNK = st.one_of(st.text(max_size=20), st.booleans(), st.none(), st.integers(-10**30, 10**30),
                 st.floats(allow_nan=True, allow_infinity=True), st.lists(st.integers(), max_size=3),
                 st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))
SPOTS = ["name", "base", "base.epochs", "base.lr", "base.model_kwargs", "base.model", "grid", "grid.lr", "seeds",
         "exclude", "random", "zip", "local", "local.max_parallel", "tracking", "new_key", "base.new_key"]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sweeps(), st.sampled_from(SPOTS), JUNK)
def test_mutated_sweeps_give_trials_or_one_spec_error(tmp_path_factory, doc: dict, spot: str, junk):
    node = doc
    *parents, leaf = spot.split(".")
    for part in parents:
        node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
    node[leaf] = junk
    path = tmp_path_factory.mktemp("mut") / "s.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        _, trials = load_sweep(path)
    except SpecError as exc:
        assert exc.issues and all(str(path) in str(i) or "<command line>" in str(i) for i in exc.issues)
    else:
        assert trials and all(math.isfinite(t.config.lr) for t in trials)
