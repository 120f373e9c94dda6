"""Bad sweep inputs, by kind: each must be refused with exit 2, one located message, no traceback, nothing written,
in seconds. Used by tests/test_sweep_fuzz.py and benchmarks/fuzz_sweeps.py (which also runs them as separate
processes under a memory limit and prints the tally)."""
from __future__ import annotations

import gzip

OK = "name: fz\nbase: {preset: smoke, epochs: 1}\n"


def _laughs(levels: int = 9) -> str:
    lines = ["name: fz", "base: {preset: smoke, epochs: 1}", 'l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


#: name -> (file bytes, command-line overrides)
CASES: dict[str, tuple[bytes, list[str]]] = {
    # bytes that are not a text file
    "not_utf8": (b"name: fz\nbase: {preset: smoke}\n\xff\xfe\xfa\n", []),
    "utf16": ("name: fz\nbase: smoke\n".encode("utf-16"), []),
    "nul_byte": (b"name: fz\x00\nbase: smoke\n", []),
    "control_char": (b"name: fz\nbase: {preset: smoke, epochs: 1}\ndescription: \"a\x07b\"\n", []),
    "gzip": (gzip.compress(OK.encode()), []),
    "binary": (bytes(range(256)) * 4, []),
    # YAML that expands or nests without bound
    "billion_laughs": (_laughs().encode(), []),
    "recursive_anchor": (b"name: fz\nbase: &b {preset: smoke, x: *b}\n", []),
    "alias": (b"name: fz\nbase: &b {preset: smoke, epochs: 1}\nvariants: {a: *b}\n", []),
    "merge_key": (b"name: fz\nd: &d {epochs: 1}\nbase: {<<: *d, preset: smoke}\n", []),
    "deep_nesting": (("name: fz\nbase: smoke\ndescription: " + "[" * 1000 + "]" * 1000 + "\n").encode(), []),
    "bad_int_tag": (b"name: fz\nbase: {preset: smoke, epochs: !!int abc}\n", []),
    "python_tag": (b"name: fz\nbase: !!python/object/apply:os.system ['true']\n", []),
    # sizes
    "one_mb_value": (("name: fz\nbase: smoke\ndescription: " + "x" * (1 << 20) + "\n").encode(), []),
    "huge_name": (("name: " + "n" * 100_000 + "\nbase: smoke\n").encode(), []),
    "thirty_digit_int": (b"name: fz\nbase: {preset: smoke, epochs: 123456789012345678901234567890}\n", []),
    "huge_synthetic": (b"name: fz\nbase: {preset: smoke, synthetic_train_size: 1000000000000}\n", []),
    "many_seeds": (b"name: fz\nbase: {preset: smoke, epochs: 1}\nseeds: 100000000\n", []),
    "seed_list": (("name: fz\nbase: {preset: smoke, epochs: 1}\nseeds: [" + ",".join(map(str, range(100_000)))
                   + "]\n").encode(), []),
    "huge_grid": (("name: fz\nbase: {preset: smoke, epochs: 1}\ngrid:\n"
                   + "".join(f"  lr: [{','.join(str(1e-3 + i * 1e-6) for i in range(100))}]\n" if k == 0 else
                             f"  weight_decay: [{','.join(str(i * 1e-3) for i in range(100))}]\n" if k == 1 else
                             f"  seed: [{','.join(map(str, range(10_000)))}]\n" for k in range(3))).encode(), []),
    "random_samples": (b"name: fz\nbase: {preset: smoke, epochs: 1}\nrandom: {samples: 1000000000, axes: "
                       b"{lr: {distribution: loguniform, low: 1.0e-4, high: 1.0e-2}}}\n", []),
    "override_seeds": (OK.encode(), ["seeds=100000000"]),
    # values that mean nothing
    "lr_inf": (b"name: fz\nbase: {preset: smoke, lr: .inf}\n", []),
    "gating_nan": (b"name: fz\nbase: {preset: smoke, model_kwargs: {gating_init: .nan}}\n", []),
    "locality_negative": (b"name: fz\nbase: {preset: smoke, model_kwargs: {locality_strength: -1}}\n", []),
    "epochs_1e30": (b"name: fz\nbase: {preset: smoke, epochs: 1.0e+30}\n", []),
    "epochs_true": (b"name: fz\nbase: {preset: smoke, epochs: true}\n", []),
    "batch_bool": (b"name: fz\nbase: {preset: smoke, batch_size: false}\n", []),
    "model_kwargs_scalar": (b"name: fz\nbase: {preset: smoke, model_kwargs: 5}\n", []),
    "model_kwargs_null": (b"name: fz\nbase: {preset: smoke, model_kwargs: null}\n", []),
    "axis_nan": (b"name: fz\nbase: {preset: smoke}\ngrid: {lr: [.nan, 0.001]}\n", []),
    "override_inf": (OK.encode(), ["lr=.inf"]),
    "override_bool": (OK.encode(), ["epochs=true"]),
    # documents that are not a sweep
    "empty": (b"", []),
    "comments_only": (b"# nothing here\n", []),
    "null_document": (b"null\n", []),
    "list_document": (b"- a\n- b\n", []),
    "scalar_document": (b"hello\n", []),
    "no_base": (b"name: fz\ngrid: {lr: [0.001]}\n", []),
    "cut_in_half": (b"name: data_fraction\ndescription: >\n  Table 2's question\n", []),
    # names only timm knows, which used to fail inside the trial
    "unknown_optimizer": (b"name: fz\nbase: {preset: smoke, epochs: 1, opt: adamx}\n", []),
    "bad_randaugment": (b"name: fz\nbase: {preset: smoke, epochs: 1, randaugment: randx}\n", []),
    "too_many_gpus": (OK.encode(), ["local.gpus_per_trial=99"]),
    # the sweep language's own values
    "exclude_matches_nothing": (b"name: fz\nbase: {preset: smoke, epochs: 1}\ngrid: {lr: [1e-3, 5.0e-4]}\n"
                                b"exclude: [{lr: 0.002}]\n", []),
}
