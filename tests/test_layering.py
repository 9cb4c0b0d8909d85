"""The import graph of the repository's own packages, read from the source with `ast`: no cycle
between modules, and the layer rules of docs/architecture.md ("Layers").

Every import counts, those inside functions too (a lazy import still runs and still ties the two
modules together). Only imports under `if TYPE_CHECKING:` are left out: they never run, and exist
for annotations alone. Importing `a.b.c` runs the package `a.b`'s `__init__` as well, but that is
how packages work, not an edge of the graph: `from a.b import c` is an edge to `a.b.c` when `c`
is a module, else to `a.b`.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("records", "stages", "scorers", "mixtures", "training", "search", "pipeline")

# (package or module prefix, what it never imports): docs/architecture.md's table.
NEVER = [
    ("stages", ("ray", "pipeline")),
    ("scorers", ("ray", "pipeline")),
    ("training", ("pipeline",)),
    ("mixtures", ("pipeline", "ray")),
    ("records", tuple(p for p in PACKAGES if p != "records")),
    ("pipeline.catalog", ("ray",)),
    ("pipeline.reporting", ("ray",)),
]


def _modules() -> dict[str, Path]:
    mods = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"
                                         or isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, package: str) -> list[str]:
    """Every module name imported in `tree` (`from x import y` gives x.y, which may be a name in x),
    relative imports resolved against `package`; `if TYPE_CHECKING:` blocks skipped."""
    names, todo = [], [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            names += [f"{base}.{a.name}" for a in node.names]
        todo += [c for c in ast.iter_child_nodes(node) if not _is_type_checking(c)]
    return names


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]], dict[str, set[str]]]:
    """(edges between the repository's modules, every top-level package each module imports, and
    imports of a folder by its bare name instead of the installed `curate.<folder>`).
    Modules are named by their folder (`pipeline.cli` for `curate.pipeline.cli`)."""
    mods = _modules()
    edges, tops, bare = {}, {}, {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported = _imports(ast.parse(path.read_text(), str(path)), package)
        bare[name] = {n for n in imported if n.split(".")[0] in PACKAGES}
        imported = [n.removeprefix("curate.") for n in imported]  # the installed name -> the folder
        tops[name] = {n.split(".")[0] for n in imported}
        edges[name] = set()
        for n in imported:
            while n and n not in mods:  # `from pkg import name`: the module that defines name
                n = n.rpartition(".")[0]
            if n and n != name:
                edges[name].add(n)
    return edges, tops, bare


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_no_import_cycles():
    edges, _, _ = _graph()
    assert len(edges) > 100 and edges["pipeline.running.runner"] >= {"stages.shardio", "records.marker"}
    assert _cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle_through_a_lazy_import():
    # The test above would pass on a graph that lost its lazy edges: check one is there and found.
    tree = ast.parse("import os\nfrom . import b\ndef f():\n    from pkg.c import g\n"
                     "if TYPE_CHECKING:\n    from pkg import d\n")
    assert sorted(_imports(tree, "pkg")) == ["os", "pkg.b", "pkg.c.g"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_layer_rules_hold():
    _, tops, _ = _graph()
    broken = [f"{module} imports {bad}" for prefix, never in NEVER for module, imported in sorted(tops.items())
              if module == prefix or module.startswith(prefix + ".") for bad in sorted(imported & set(never))]
    assert broken == []


def test_every_import_uses_the_installed_name():
    # The installed package is `curate` (pyproject's package-dir): `import pipeline` would work only
    # from the repository root, and would load a second copy of each module beside `curate.pipeline`.
    _, _, bare = _graph()
    assert {m: sorted(b) for m, b in bare.items() if b} == {}


def test_the_installed_package_lists_every_folder():
    # pyproject.toml names each package under `curate` explicitly (package-dir maps the root to it):
    # a new folder missing from that list would be absent from a wheel.
    import tomllib
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {"curate." + ".".join(p.parent.relative_to(REPO).parts) for package in PACKAGES
               for p in (REPO / package).rglob("__init__.py")}
    assert folders <= listed and "curate" in listed
