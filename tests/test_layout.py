"""The package layout shows the data flow, and imports point one way down it."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "gentext"
# Lower layers never import higher ones (DESIGN.md, "Data flows one way").
LAYERS = [
    {"errors", "config", "useconfig", "hardware", "threads"},
    {"data"},
    {"models"},
    {"checkpoint"},
    {"training"},
    {"inference"},
    {"api", "settings"},
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
