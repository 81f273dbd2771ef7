"""The layer contract of the package (docs/architecture.md, "Layers"), checked over the import graph.

Every `import` and `from ... import` of every module under src/vlmparity is read with `ast`, wherever it
stands: at module level, inside a function (a deferred import), or under `if TYPE_CHECKING:`. A deferred
import is therefore no way around the contract: a cycle it would hide is still a cycle here.

Checked:
- the layers: a module imports only modules of its own layer group or of lower layers; siblings of an
  independent layer (`|` in `LAYERS`) do not import each other;
- independence: the simulator and the synthetic data import nothing of the evaluation path (only the leaves);
- no import cycle between modules;
- no module over `MAX_LINES` lines unless its docstring gives the reason in a paragraph starting "Long module:";
- no mutable module state: no module-level container that the module's code mutates, no `global`
  statement, and no assignment at import time to an attribute of another module (such as Pillow's
  `Image.MAX_IMAGE_PIXELS`), except the registries and process-wide sets listed in `ALLOWED_STATE`, each with
  its reason.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "vlmparity"
MAX_LINES = 600

# From the top down. A layer is a tuple of sibling "containers" (a package or a module, named by its dotted
# path). `independent=True`: the siblings must not import each other.
LAYERS: tuple[tuple[tuple[str, ...], bool], ...] = (
    (("vlmparity._entry", "vlmparity.__main__"), False),
    (("vlmparity.cli",), False),
    (("vlmparity.demo",), False),
    (("vlmparity.pipeline",), False),
    (("vlmparity.report",), False),
    (("vlmparity.compare",), False),
    (("vlmparity.runner", "vlmparity.doctor", "vlmparity.launch", "vlmparity.offline"), True),
    (("vlmparity.store", "vlmparity.client", "vlmparity.data", "vlmparity.config"), True),
    (("vlmparity.tasks", "vlmparity.backends"), True),
    (("vlmparity.stats",), False),
    (
        (
            "vlmparity.errors",
            "vlmparity.masking",
            "vlmparity.tokentrace",
            "vlmparity.interrupt",
            "vlmparity.lock",
            "vlmparity._malloc",
            "vlmparity.canonical",
            "vlmparity",  # the package's face: __version__
        ),
        False,
    ),
)
LEAVES = LAYERS[-1][0]
# Stand apart: they import nothing of the evaluation path, only the leaves (and themselves).
INDEPENDENT = ("vlmparity.sim", "vlmparity.synth")

# Module-level mutable state that is allowed, with the reason.
ALLOWED_STATE: dict[tuple[str, str], str] = {
    ("vlmparity.tasks.base", "_REGISTRY"): "the task registry: filled once per name at import, read after",
    ("vlmparity.backends.base", "_REGISTRY"): "the backend-profile registry: filled once per kind at import",
    ("vlmparity.masking", "_known"): "secrets are process-wide: every print of the process must mask them",
    ("vlmparity.lock", "_held"): "flock is per process: reentrancy must be counted per process",
}


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported vlmparity module (the longest existing prefix)
    line: int
    deferred: bool


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The vlmparity module `name` refers to (a name imported from a module resolves to the module)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, path: Path, known: dict[str, Path]) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_pkg = path.name == "__init__.py"
    deferred_nodes: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            deferred_nodes.update(
                id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))
            )
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names = [f"{prefix}.{a.name}" for a in node.names] or [prefix]
        for name in names:
            if not name.startswith(PACKAGE):
                continue
            target = _resolve(name, known)
            if target is not None and target != module:
                yield Import(module, target, node.lineno, id(node) in deferred_nodes)


def _graph() -> list[Import]:
    known = _modules()
    return [imp for mod, path in known.items() for imp in _imports(mod, path, known)]


def _container(module: str) -> tuple[int, str] | None:
    """(layer index, container) of a module: the longest container that is it or a package above it."""
    best: tuple[int, str] | None = None
    for index, (containers, _) in enumerate(LAYERS):
        for c in containers:
            inside = (module == c or module.startswith(c + ".")) and c != PACKAGE
            if inside and (best is None or len(c) > len(best[1])):
                best = (index, c)
    if best is None and module == PACKAGE:
        return len(LAYERS) - 1, PACKAGE
    return best


def _independent(module: str) -> str | None:
    return next((c for c in INDEPENDENT if module == c or module.startswith(c + ".")), None)


def _where(imp: Import) -> str:
    rel = _modules()[imp.source].relative_to(SRC.parent)
    return f"{rel}:{imp.line} {imp.source} -> {imp.target}{' (deferred)' if imp.deferred else ''}"


def test_every_module_has_a_place() -> None:
    homeless = [m for m in _modules() if _container(m) is None and _independent(m) is None]
    assert not homeless, f"modules in no layer (add them to LAYERS or INDEPENDENT): {homeless}"


def _against_layers(imports: list[Import]) -> list[str]:
    bad: list[str] = []
    for imp in imports:
        if _independent(imp.source) or _independent(imp.target):
            continue
        src, dst = _container(imp.source), _container(imp.target)
        if src is None or dst is None or src[1] == dst[1]:
            continue  # unplaced (another test says so) or inside one package or module
        where = f"{imp.source}:{imp.line} -> {imp.target}{' (deferred)' if imp.deferred else ''}"
        if dst[0] < src[0]:
            bad.append(f"{where}: imports a higher layer")
        elif dst[0] == src[0] and LAYERS[src[0]][1]:
            bad.append(f"{where}: independent siblings")
    return sorted(set(bad))


def test_imports_point_down_the_layers() -> None:
    bad = _against_layers(_graph())
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_simulator_and_synthetic_data_stand_apart() -> None:
    bad: list[str] = []
    for imp in _graph():
        src_part, dst_part = _independent(imp.source), _independent(imp.target)
        leaf = any(imp.target == x or imp.target.startswith(x + ".") for x in LEAVES if x != PACKAGE)
        if src_part and dst_part != src_part and not leaf:
            bad.append(f"{_where(imp)}: {src_part} may import only the leaves")
        if dst_part and not src_part:
            src = _container(imp.source)
            if src is not None and src[0] > 2:  # only the entry points, the CLI and the demo start them
                bad.append(f"{_where(imp)}: the evaluation path must not import {dst_part}")
    assert not bad, "\n".join(sorted(set(bad)))


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp: list[str] = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_no_import_cycles_even_through_deferred_imports() -> None:
    edges: dict[str, set[str]] = {}
    for imp in _graph():
        edges.setdefault(imp.source, set()).add(imp.target)
    cycles = _cycles(edges)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_long_modules_say_why() -> None:
    bad: list[str] = []
    for path in _modules().values():
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        if lines <= MAX_LINES:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if "Long module:" not in doc:
            bad.append(f"{path.relative_to(SRC.parent)}: {lines} lines and no 'Long module:' reason")
    assert not bad, "\n".join(bad)


def _mutations(tree: ast.Module) -> set[str]:
    """Names of module-level bindings that code in the module mutates in place."""
    mutating = {
        "add",
        "append",
        "extend",
        "update",
        "pop",
        "popitem",
        "clear",
        "setdefault",
        "discard",
        "remove",
        "insert",
        "move_to_end",
    }
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for t in targets:
                if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name):
                    out.add(t.value.id)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in mutating
            and isinstance(node.func.value, ast.Name)
        ):
            out.add(node.func.value.id)
    return out


def _module_state(module: str, tree: ast.Module) -> list[str]:
    """Mutable module state of one module (allowed entries left out)."""
    bad: list[str] = []
    containers: dict[str, int] = {}
    imported: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imported.update((a.asname or a.name).split(".")[0] for a in node.names)
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        for t in targets:
            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id in imported:
                bad.append(f"{module}:{node.lineno}: sets {t.value.id}.{t.attr} at import (process-wide)")
            if isinstance(t, ast.Name) and value is not None:
                mutable = isinstance(
                    value, (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)
                )
                if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
                    mutable = mutable or value.func.id in {
                        "dict",
                        "list",
                        "set",
                        "defaultdict",
                        "OrderedDict",
                    }
                if mutable:
                    containers[t.id] = node.lineno
    mutated = _mutations(tree)
    for name, line in containers.items():
        if name in mutated and (module, name) not in ALLOWED_STATE:
            bad.append(f"{module}:{line}: module-level {name!r} is mutated at run time")
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            for name in node.names:
                if (module, name) not in ALLOWED_STATE:
                    bad.append(f"{module}:{node.lineno}: `global {name}`")
    return bad


def test_no_mutable_module_state() -> None:
    bad = [
        b for module, path in _modules().items() for b in _module_state(module, ast.parse(path.read_text()))
    ]
    assert not bad, "mutable module state:\n" + "\n".join(bad)


def test_every_allowed_state_exists() -> None:
    """The allow-list cannot rot: each entry names a module-level binding that is there."""
    known = _modules()
    missing = []
    for module, name in ALLOWED_STATE:
        tree = ast.parse(known[module].read_text(encoding="utf-8")) if module in known else None
        bound = tree is not None and any(
            isinstance(t, ast.Name) and t.id == name
            for node in tree.body
            for t in (node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)])
        )
        if not bound:
            missing.append(f"{module}.{name}")
    assert not missing, f"ALLOWED_STATE names bindings that do not exist: {missing}"


def test_the_checker_sees_what_it_must() -> None:
    """The checks themselves, on made-up imports and code: each finds what it is there for."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    upward = Import("vlmparity.store.queries", "vlmparity.report.html", 1, deferred=True)
    sideways = Import("vlmparity.client.probe", "vlmparity.store", 2, deferred=False)
    inside = Import("vlmparity.report.html", "vlmparity.report.model", 3, deferred=False)
    down = Import("vlmparity.compare.join", "vlmparity.runner.scoring", 4, deferred=False)
    found = _against_layers([upward, sideways, inside, down])
    assert found == [
        "vlmparity.client.probe:2 -> vlmparity.store: independent siblings",
        "vlmparity.store.queries:1 -> vlmparity.report.html (deferred): imports a higher layer",
    ]
    code = ast.parse(
        "from PIL import Image\nImage.MAX_IMAGE_PIXELS = 1\n_seen = set()\n_table = {}\n"
        "def f(x):\n    _seen.add(x)\n    global _n\n    return _table.get(x)\n"
    )
    assert _module_state("vlmparity.made_up", code) == [
        "vlmparity.made_up:2: sets Image.MAX_IMAGE_PIXELS at import (process-wide)",
        "vlmparity.made_up:3: module-level '_seen' is mutated at run time",
        "vlmparity.made_up:7: `global _n`",
    ]
