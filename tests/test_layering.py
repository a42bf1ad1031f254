"""How the package is layered: shared lists are written once."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'drcnet'


def imported_modules(path: Path) -> set:
    """Every module a file imports, at any depth (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f'{node.module}.{alias.name}' for alias in node.names)
    return found


def test_the_optimiser_choices_are_written_once():
    from drcnet.engine import optim, schema
    from drcnet.models import image_restoration_model

    def lists_naming_rmsprop(path):
        return [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, (ast.Tuple, ast.List))
                and any(isinstance(e, ast.Constant) and e.value == 'RMSprop' for e in n.elts)]

    holders = [p.relative_to(PACKAGE).as_posix() for p in sorted(PACKAGE.rglob('*.py')) if lists_naming_rmsprop(p)]
    assert holders == ['engine/optim.py']
    assert schema.OPTIMIZERS is optim.OPTIMIZERS
    assert 'drcnet.engine.optim.build_optimizer' in imported_modules(Path(image_restoration_model.__file__))
