"""The shape of the code base (issue 20, docs/architecture.md): one owner per file format, an
acyclic import graph (imports inside functions counted), small modules, a library without
streamlit, registries equal to their vocabularies.

These read the source with :mod:`ast`; nothing is imported but the registries.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "pneumo"
APP = [ROOT / "pneumo_app", ROOT / "app_pages", ROOT / "streamlit_app.py"]
MAX_LINES = 500

# Each format's literals, and the one module allowed to spell them. A pattern is matched
# against every string constant of the code (docstrings excepted; f-strings contribute their
# literal parts), so a message naming a file goes through the owner's constant too.
def _per_split(stem: str) -> str:
    """A per-split file name: ``stem_`` alone (an f-string's literal part) or ``stem_<split>.``,
    not a function name such as ``stem_path``."""
    return rf"^{stem}_$|{stem}_(train|dev|test)\."


OWNERS: dict[str, list[str]] = {
    "pneumo/store/pack.py": [
        r"^(X|Y|ids|source_path|source_hw|source_size|source_mtime_ns|source_sha256)_(train|dev|test)?$", r"^(count|positive_fraction)_(train|dev|test)?$",
        r"^pneumo-pack$", r"^format_version$", r"^excluded_ids$",
    ],
    "pneumo/store/run.py": [
        r"config\.json", r"status\.json", r"history\.csv", r"progress\.json", r"(\w|^)\.keras$", r"^STOP$",
        r"train\.log", r"pack\.json", r"excluded\.json", r"state\.json", _per_split("evaluate"),
    ],
    "pneumo/store/predictions.py": [_per_split("predictions"), _per_split("metrics"), _per_split("cases")],
    "pneumo/store/verdicts.py": [r"reviews\.sqlite"],
    "pneumo/store/thresholds.py": [r"thresholds\.json"],
    "pneumo/store/relabel.py": [_per_split("relabel")],
    "pneumo/store/quickstart_job.py": [r"\.quickstart\.(json|log)"],
}

# The same spelling meaning something else: Keras' own home folder (~/.keras), not a checkpoint.
HOMONYMS = {("pneumo/model/imagenet.py", ".keras")}


def _modules(*roots: Path) -> list[Path]:
    out: list[Path] = []
    for root in roots:
        out += [root] if root.is_file() else sorted(root.rglob("*.py"))
    return out


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _strings(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _docstrings(tree)
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skip]


@pytest.mark.parametrize("owner", sorted(OWNERS))
def test_each_format_is_spelled_by_its_owner_only(owner):
    assert (ROOT / owner).is_file(), f"{owner} is missing"
    strays = []
    for path in _modules(LIBRARY, *APP):
        rel = path.relative_to(ROOT).as_posix()
        if rel == owner:
            continue
        for line, value in _strings(path):
            if (rel, value) in HOMONYMS:
                continue
            for pattern in OWNERS[owner]:
                if re.search(pattern, value):
                    strays.append(f"{rel}:{line}: {value!r}")
    assert not strays, f"literals of {owner}'s format outside it:\n" + "\n".join(strays)


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """Every module of ``modules`` that ``path`` (module ``name``) imports, at any depth
    (inside functions too). Packages are left out: our ``__init__`` files import nothing."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] + [node.module or ""]) if node.level \
                else node.module or ""
            base = base.strip(".")
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in modules and t != name}
    return {t for t in found if not any(m.startswith(t + ".") for m in modules)}


def _graph() -> dict[str, set[str]]:
    paths = _modules(LIBRARY, ROOT / "pneumo_app")
    modules = {_name(p) for p in paths}
    return {_name(p): _imports(p, _name(p), modules) for p in paths}


def test_no_import_cycle_even_through_imports_inside_functions():
    graph = _graph()
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_graph_check_finds_a_cycle(tmp_path):
    """The cycle check itself: two modules importing each other inside functions are found."""
    (tmp_path / "a.py").write_text("def f():\n    from b import x\n")
    (tmp_path / "b.py").write_text("def g():\n    import a\n")
    mods = {"a", "b"}
    assert _imports(tmp_path / "a.py", "a", mods) == {"b"} and _imports(tmp_path / "b.py", "b", mods) == {"a"}


@pytest.mark.parametrize("path", _modules(LIBRARY, *APP), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_module_over_the_size_limit(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)}: {lines} lines (limit {MAX_LINES}); split it by responsibility"


def test_the_library_never_imports_streamlit():
    users = [p.relative_to(ROOT).as_posix() for p in _modules(LIBRARY)
             if re.search(r"^\s*(import|from)\s+streamlit\b", p.read_text(encoding="utf-8"), re.M)]
    assert not users


def test_config_holds_values_only():
    """pneumo.config: dataclasses, vocabularies, presets and dict round trips; no file I/O (reading
    a config file is pneumo.store.config_file's, checking a config against its files pneumo.plan's)."""
    tree = ast.parse((LIBRARY / "config.py").read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add("." if node.level else node.module)
    assert imported <= {"__future__", "dataclasses", "json", "math", "os", "types", "typing", "pathlib",
                        "pneumo.errors"}, imported
    io_calls = {"open", "read_text", "write_text", "read_bytes", "write_bytes", "is_file", "exists", "stat",
                "iterdir", "glob", "mkdir", "unlink", "replace", "load", "dump"}
    calls = [(n.lineno, getattr(n.func, "attr", getattr(n.func, "id", ""))) for n in ast.walk(tree)
             if isinstance(n, ast.Call)]
    used = [(line, name) for line, name in calls if name in io_calls]
    # str.replace and dataclasses.replace share a name with Path.replace: allow them by receiver
    used = [(line, name) for line, name in used if name != "replace"]
    assert not used, f"file I/O in pneumo/config.py: {used}"
