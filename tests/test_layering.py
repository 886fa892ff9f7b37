"""Every import arrow points down: the package's floors, and library modules never importing the CLI.

The CLI is the top layer (Click, option parsing, one-line errors); library code that imported it would
pull Click option handling into notebooks and make the CLI impossible to change on its own. Only
`mrcnn_tf/__main__.py` (``python -m mrcnn_tf``, above the CLI) may import it. Below it the floors are

    cli -> wbc -> model -> inference, nets -> engine, data, layers, evaluation (and Matterport's lisc, coco,
    utils, visualize) -> ops -> config, weights, backend -> errors

and a module may import its own floor or lower ones only: the base Config knows no application module, the
model knows no white-cell code, ops know neither the engine nor the backend's switches. The scan reads the
package's source files with `ast`, so imports inside functions count too.
"""
import ast
import pathlib
import re

import mrcnn_tf

PACKAGE = pathlib.Path(mrcnn_tf.__file__).parent
ABOVE_THE_CLI = {"__main__.py"}


def imported_modules(source, module_name):
    """Absolute names of the modules a source file imports (relative imports resolved against `module_name`)."""
    found = []
    package = module_name.rsplit(".", 1)[0] if not module_name.endswith("__init__") else module_name[:-9]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            found.append(base)
            # `from mrcnn_tf import cli` imports the module mrcnn_tf.cli.
            found.extend(f"{base}.{alias.name}" for alias in node.names)
    return found


def cli_imports(path):
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    module_name = ".".join(relative.parts)
    return [name for name in imported_modules(path.read_text(encoding="utf-8"), module_name)
            if name == "mrcnn_tf.cli" or name.startswith("mrcnn_tf.cli.")]


def test_the_scan_sees_every_import_form():
    lib = "mrcnn_tf.demo"
    assert imported_modules("from mrcnn_tf.cli.detect import run_detect", lib)[0] == "mrcnn_tf.cli.detect"
    assert "mrcnn_tf.cli" in imported_modules("from mrcnn_tf import cli", lib)
    assert "mrcnn_tf.cli" in imported_modules("def f():\n    import mrcnn_tf.cli\n", lib)
    assert imported_modules("from .cli import _common", lib)[0] == "mrcnn_tf.cli"
    assert imported_modules("from ..cli import x", "mrcnn_tf.data.dataset")[0] == "mrcnn_tf.cli"
    assert imported_modules("from . import ops", "mrcnn_tf.__init__")[0] == "mrcnn_tf"


def test_library_modules_never_import_the_cli():
    sources = [p for p in PACKAGE.rglob("*.py") if "cli" not in p.relative_to(PACKAGE).parts[:1]
               and p.name not in ABOVE_THE_CLI]
    assert len(sources) > 30 and PACKAGE / "wbc" / "demo.py" in sources
    assert PACKAGE / "inference" / "detect_folder.py" in sources
    offenders = {str(p.relative_to(PACKAGE)): cli_imports(p) for p in sources if cli_imports(p)}
    assert offenders == {}, f"library modules importing mrcnn_tf.cli (move the code below the CLI): {offenders}"


# Floor of each part of the package (a folder, or a module at the top); higher floors may import lower ones.
FLOORS = {
    "errors": 0,
    "config": 1, "weights": 1, "backend": 1,
    "ops": 2,
    "engine": 3, "data": 3, "layers": 3, "evaluation": 3, "lisc": 3, "coco": 3, "utils": 3, "visualize": 3,
    "inference": 4, "nets": 4,
    "model": 5,
    "wbc": 6,
    "cli": 7,
}
# The package's own __init__ (process settings before TensorFlow loads) and `python -m mrcnn_tf`.
OUTSIDE_THE_FLOORS = {"__init__", "__main__"}
MAX_TOP_LEVEL_MODULES = 15


def part_of(module_name):
    """'mrcnn_tf.engine.training' -> 'engine'; 'mrcnn_tf.model' -> 'model'; 'mrcnn_tf' -> None."""
    parts = module_name.split(".")
    return parts[1] if len(parts) > 1 else None


def upward_imports(source, module_name):
    """The names `source` (the module `module_name`) imports from a floor above its own."""
    own = part_of(module_name)
    found = []
    for name in imported_modules(source, module_name):
        target = part_of(name) if name.startswith("mrcnn_tf.") else None
        if target is None or target == own or target not in FLOORS:
            continue  # `from mrcnn_tf import x` is judged by its `mrcnn_tf.x` entry
        if FLOORS[target] > FLOORS[own]:
            found.append(name)
    return found


def test_every_part_of_the_package_has_a_floor():
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.is_file() and p.suffix == ".py") or (p.is_dir() and (p / "__init__.py").is_file())}
    assert parts - OUTSIDE_THE_FLOORS == set(FLOORS), "give the new part of the package a floor in FLOORS"


def test_the_floor_scan_catches_an_upward_import():
    up = upward_imports("from mrcnn_tf.wbc.colour_typing import FEATURE_SETS", "mrcnn_tf.config")
    assert up == ["mrcnn_tf.wbc.colour_typing", "mrcnn_tf.wbc.colour_typing.FEATURE_SETS"]
    assert upward_imports("def f():\n    from mrcnn_tf import model\n", "mrcnn_tf.ops.anchors") == ["mrcnn_tf.model"]
    assert upward_imports("from mrcnn_tf.errors import MrcnnError\nfrom mrcnn_tf.data import targets",
                          "mrcnn_tf.engine.training") == []  # lower floor, and the engine's own floor
    assert upward_imports("from . import training", "mrcnn_tf.engine.driver") == []


def test_no_module_imports_a_higher_floor():
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in ("__init__.py", "__main__.py"):
            continue
        module_name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found = upward_imports(path.read_text(encoding="utf-8"), module_name)
        if found:
            offenders[str(relative)] = found
    assert offenders == {}, f"imports pointing up the floors (move the code, or hand the object in): {offenders}"


def test_at_most_fifteen_modules_at_the_top_level():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top
    for face in ("config.py", "model.py", "utils.py", "visualize.py", "lisc.py", "coco.py"):
        assert face in top  # Matterport's import paths


def test_benchmarks_use_the_public_library_only():
    """bench/ scripts import neither the CLI nor a private name, and reach no private attribute: they measure what
    a user can call (a benchmark on a private path measures a path nobody runs)."""
    bench = PACKAGE.parent / "bench"
    private_import = re.compile(r"^\s*from mrcnn_tf[\w.]* import .*\b_[a-z]\w*|^\s*(from|import) mrcnn_tf\.cli\b", re.M)
    private_attribute = re.compile(r"\w\._[a-z]\w*")
    offenders = {p.name: [m.group(0) for m in (*private_import.finditer(text), *private_attribute.finditer(text))]
                 for p in sorted(bench.glob("*.py")) for text in [p.read_text(encoding="utf-8")]}
    assert len(offenders) >= 10 and {name: found for name, found in offenders.items() if found} == {}
