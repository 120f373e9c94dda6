"""The rules of docs/ARCHITECTURE.md, executable: import-linter contracts (pyproject.toml), the engine's output
names only in convit.records, and function-level imports only for heavy dependencies, each saying which."""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("convit", "orchestrator")
#: The engine's out_dir names (convit.records) that no other module may spell out.
ENGINE_NAMES = ("config.json", "metrics.jsonl", "final.json", "progress.json", "owner.lock", "checkpoints")
#: A string literal that starts a checkpoint's name (convit.records.checkpoint_name and its pattern).
ENGINE_PREFIX = re.compile(r"""["']ckpt-""")
#: File names a backend leaves for other rooms to read, each spelt only in its home module.
NAME_HOMES = {"ray_stopped.json": Path("orchestrator/backends/layout.py")}
#: A function-level import must say why on its line: the dependency is heavy (torch, mlflow, matplotlib, ...).
REASON = re.compile(r"#\s*heavy\b")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=300,
                          env={"PATH": str(lint.parent), "PYTHONPATH": str(root), "HOME": str(root)})


#: Run in a subprocess on a tree (its own sys.path): every import cycle among siblings, as import-linter's
#: acyclic_siblings finds them (grimp's cycle breakers), each closed by the shortest chain back, every hop with
#: its line. import-linter's own report names only the two sibling packages.
_CYCLES = r"""
import sys, grimp
graph = grimp.build_graph(*sys.argv[1:])

def hop(importer, imported):
    details = graph.get_import_details(importer=importer, imported=imported)
    where = f" (l.{details[0]['line_number']}: {details[0]['line_contents']})" if details else ""
    return f"    {importer} -> {imported}{where}"

def walk(package):
    children = graph.find_children(package)
    if len(children) >= 2:
        depth = package.count(".") + 2
        for importer, imported in sorted(graph.nominate_cycle_breakers(package)):
            home = ".".join(importer.split(".")[:depth])
            back = graph.find_shortest_chain(imported, home, as_packages=True) or ()
            print(f"cycle in {package}: {importer} imports {imported}, which leads back to {home}:")
            print(hop(importer, imported))
            for a, b in zip(back, back[1:]):
                print(hop(a, b))
    for child in sorted(children):
        walk(child)

for package in sys.argv[1:]:
    walk(package)
"""


def import_cycles(root: Path) -> str:
    """The import chains that make the no-cycles contract fail, with modules and lines ('' when none)."""
    out = subprocess.run([sys.executable, "-c", _CYCLES, *PACKAGES], cwd=root, capture_output=True, text=True,
                         timeout=300, env={"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(root)})
    return out.stdout + out.stderr[-2000:]


def modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py"))


def test_import_contracts_hold():
    out = lint_imports(REPO)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:] + import_cycles(REPO)
    assert "0 broken" in out.stdout


def test_a_reintroduced_import_cycle_is_caught_and_named(tmp_path: Path):
    """The contracts are not vacuous: a copy of the code with one cycle added (keys -> spec -> keys) fails,
    and the report names the import to remove, with the chain that closes the cycle (module, line)."""
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    keys = tmp_path / "orchestrator" / "keys.py"
    keys.write_text(keys.read_text() + "\nfrom orchestrator.spec import SweepSpec  # noqa: E402,F401\n")
    out = lint_imports(tmp_path)
    assert out.returncode != 0
    assert "No cycles are allowed in orchestrator" in out.stdout and ".keys -> .spec" in out.stdout, out.stdout
    chains = import_cycles(tmp_path)  # what test_import_contracts_hold adds to its failure: modules and lines
    assert "orchestrator.keys -> orchestrator.spec (l." in chains, chains
    assert "from orchestrator.spec import SweepSpec" in chains, chains


def _quoted(name: str, code: str) -> bool:
    return f'"{name}"' in code or f"'{name}'" in code


def test_engine_file_names_are_spelt_only_in_convit_records():
    offenders = []
    for path in modules():
        if path == REPO / "convit" / "records.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if any(_quoted(name, code) for name in ENGINE_NAMES) or ENGINE_PREFIX.search(code):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, "use the constants of convit.records:\n" + "\n".join(offenders)


def test_backend_file_names_read_elsewhere_are_spelt_only_in_their_home():
    offenders = []
    for path in modules():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            for name, home in NAME_HOMES.items():
                if path != REPO / home and _quoted(name, code):
                    offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()} (use {home})")
    assert not offenders, "\n".join(offenders)


def _function_imports(path: Path) -> list[tuple[int, str]]:
    """(line, the import statement's text, all its lines) of every import inside a function."""
    tree = ast.parse(path.read_text())
    lines = path.read_text().splitlines()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    end = inner.end_lineno or inner.lineno
                    found.append((inner.lineno, "\n".join(lines[inner.lineno - 1:end])))
    return sorted(set(found))


def test_function_level_imports_are_for_heavy_dependencies_and_say_so():
    """Rule 9: a module imports what it needs at the top; an import inside a function is a heavy dependency
    (torch, mlflow, matplotlib) kept off a light path (``--help``, validating a sweep), with a comment."""
    missing, total = [], 0
    for path in modules():
        for lineno, statement in _function_imports(path):
            total += 1
            if not REASON.search(statement):  # on the import's own line(s)
                missing.append(f"{path.relative_to(REPO)}:{lineno}: {statement.strip()}")
    assert not missing, "function-level imports without a '# heavy: ...' reason:\n" + "\n".join(missing)
    assert total <= 37, f"{total} function-level imports: move the light ones to the top of their module"


def test_each_backend_receives_the_section_its_name_records():
    """Three places name a backend's section (the sweep schema's field, SECTION_TYPES for reading sweep.json back,
    Backend.section): they must agree, or a recorded sweep would be read back as another backend's options."""
    from orchestrator.backends import BACKENDS, get_backend
    from orchestrator.sections import SECTION_TYPES
    from orchestrator.spec import SweepSpec

    assert set(SECTION_TYPES) == set(BACKENDS)
    for name, section in SECTION_TYPES.items():
        assert get_backend(name, **({"check": False} if name == "slurm" else {})).section is section
        assert SweepSpec.model_fields[name].annotation is section


def test_a_trial_process_reaches_the_engine_before_mlflow():
    """What a fresh trial process imports before its first step: the SLURM task's job (unpickled by submitit)
    and the trial runner need neither MLflow nor torch at import; MLflow is imported in the thread that opens
    the run, torch by the engine (import-linter cannot say this: it counts imports inside functions too)."""
    code = ("import sys, orchestrator.backends.slurm.job, orchestrator.trial_runner; "
            "print([m for m in ('mlflow', 'torch', 'orchestrator.tracking') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
