"""Every import arrow points down: library modules never import the command-line layer (mrcnn_tf/cli).

The CLI is the top layer (Click, option parsing, one-line errors); library code that imported it would
pull Click option handling into notebooks and make the CLI impossible to change on its own. Only
`mrcnn_tf/__main__.py` (``python -m mrcnn_tf``, above the CLI) may import it. The scan reads the
package's source files with `ast`, so imports inside functions count too.
"""
import ast
import pathlib

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
    assert len(sources) > 30 and PACKAGE / "demo.py" in sources and PACKAGE / "detect_folder.py" in sources
    offenders = {str(p.relative_to(PACKAGE)): cli_imports(p) for p in sources if cli_imports(p)}
    assert offenders == {}, f"library modules importing mrcnn_tf.cli (move the code below the CLI): {offenders}"
