"""The package layout shows the data flow, and imports point one way down it."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "gentext"
# Lower layers never import higher ones (DESIGN.md, "Data flows one way").
LAYERS = [
    {"errors", "fields", "config", "flagtext", "keywords", "useconfig", "runconfig", "hardware", "threads"}
    | {"paths", "native", "presets"},
    {"data"},
    {"models"},
    {"checkpoint", "claim"},
    {"training"},
    {"inference"},
    {"conditions"},
    {"api", "settings", "pipeline"},
    {"cli", "server", "__init__", "__main__"},
]


def layer(top: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if top in names)


def imported(tree: ast.AST) -> set[str]:
    """The gentext modules a file imports (anywhere in it, function-level imports included)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gentext"):
            parts = node.module.split(".")
            found |= {parts[1]} if len(parts) > 1 else {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("gentext.")}
    return found


def test_every_module_sits_in_a_layer_and_imports_only_layers_below_or_its_own():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        top = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for other in imported(ast.parse(path.read_text(encoding="utf-8"))):
            if layer(other) > layer(top):
                wrong.append(f"{path.relative_to(PACKAGE)} imports gentext.{other}")
    assert wrong == []


def test_no_relative_imports_hide_the_flow():
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level], path


def test_inference_never_imports_training():
    """Generation and evaluation stand beside training, not on it: the rules both need (scoring,
    the pair and hold-out rules) live below both, in models/ and data/."""
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in (PACKAGE / "inference").rglob("*.py")
        if "training" in imported(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert offenders == []


def _module_names() -> dict[str, Path]:
    names = (".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts) for p in PACKAGE.rglob("*.py"))
    return {name.removesuffix(".__init__"): path for name, path in zip(names, PACKAGE.rglob("*.py"), strict=True)}


def test_no_two_modules_import_each_other_in_any_cycle():
    """Modules form no import cycle of any length (imports anywhere in a file, function-level too).
    `from package import name` depends on the package's __init__ unless the name is a submodule;
    the parent packages Python runs on the way to a submodule are not counted."""
    modules = _module_names()
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module:
                submodules = [f"{node.module}.{a.name}" for a in node.names]
                targets = [t for t in submodules if t in modules]
                if len(targets) < len(submodules):  # a name defined in the module (or package) itself
                    targets.append(node.module)
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            edges[name] |= {t for t in targets if t in modules and t != name}
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(path[path.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for name in sorted(modules):
        if name not in state:
            visit(name, [name])
    assert cycles == []


MAX_LINES = 300  # past this a file holds more than one responsibility: split it by one (DESIGN.md)


def test_every_python_file_stays_within_the_line_budget():
    root = PACKAGE.parents[1]
    files = [path for folder in ("src", "tests", "benchmarks") for path in (root / folder).rglob("*.py")]
    long = {
        str(p.relative_to(root)): n for p in files if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert len(files) > 100 and not long
