"""Stages point one way: a stage may import those before it, never one after it.

data -> backbones -> features -> model -> training -> doctor -> evaluation -> export -> serving
-> labelling -> studio -> cluster,
with errors, storage, console and threads as a floor every stage may use, and the top (cli, the
pipeline that ties the stages together, the package's __init__) free to import anything. Lazy
imports inside functions count too: they are dependencies all the same.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import headstart

STAGES = [
    "data",
    "backbones",
    "features",
    "model",
    "training",
    "doctor",
    "evaluation",
    "export",
    "serving",
    "labelling",
    "studio",
    "cluster",
]
FLOOR = {"errors", "storage", "console", "threads", "settings", "context", "lazy"}
TOP = {"cli", "pipeline", "__init__"}
PACKAGE = Path(headstart.__file__).parent


def imported_parts(tree: ast.AST) -> list[str]:
    """The first name under `headstart.` of every headstart import in a module."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [n.split(".")[1] for n in names if n.startswith("headstart.")]
    return found


def test_every_import_follows_the_stage_order():
    against = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).parts
        own = parts[0] if len(parts) > 1 else path.stem
        if own in TOP or own in FLOOR:
            continue
        assert own in STAGES, f"{path}: a module outside every stage"
        for target in imported_parts(ast.parse(path.read_text(encoding="utf-8"))):
            if target in FLOOR or target == own:
                continue
            if target not in STAGES or STAGES.index(target) > STAGES.index(own):
                against.append(f"{path.relative_to(PACKAGE)} imports headstart.{target}")
    assert against == []


# Beyond the order: stages that must never reach another, although it comes before them.
NEVER = {
    "data": {"backbones"},  # finding and decoding images knows nothing of networks
    "features": {"export"},
    "model": {"training", "evaluation"},  # a trained model predicts without the code that made it
    "export": {"training"},  # an exported model runs without the code that trained it
    "serving": {"features"},  # the server decodes and runs ONNX: no cache, no store
}


def test_stages_never_reach_what_they_must_not():
    reached = []
    for own, forbidden in NEVER.items():
        for path in sorted((PACKAGE / own).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            reached += [f"{path.relative_to(PACKAGE)} imports headstart.{target}"
                        for target in imported_parts(tree) if target in forbidden]  # fmt: skip
    assert reached == []


def test_the_server_loads_a_handful_of_modules():
    """Importing the server loads the decoding, the ONNX runtime and itself, not the cache,
    the store or the training code: 17 headstart modules, 28 before (8 are packages)."""
    script = (
        "import json, sys, headstart.serving.app\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('headstart'))))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    loaded = json.loads(done.stdout)
    assert not [m for m in loaded if m.startswith(("headstart.features", "headstart.training"))]
    assert "headstart.backbones.preprocessing" in loaded and len(loaded) <= 17, loaded


def test_the_floor_imports_no_stage():
    for name in FLOOR:
        tree = ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))
        assert set(imported_parts(tree)) <= FLOOR, name


def test_the_public_api_is_documented():
    """Every name in headstart.__all__, and every public method of its classes, says what it
    does."""
    import inspect

    missing = []
    for name in headstart.__all__:
        if name.startswith("__"):
            continue
        thing = getattr(headstart, name)
        if not inspect.getdoc(thing):
            missing.append(name)
        if inspect.isclass(thing) and not issubclass(thing, Exception):
            for member, value in vars(thing).items():
                function = value.fget if isinstance(value, property) else value
                function = getattr(function, "__func__", function)
                if not member.startswith("_") and callable(function) and not function.__doc__:
                    missing.append(f"{name}.{member}")
    assert missing == []
