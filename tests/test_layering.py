"""How the package is layered: commands stand alone, shared lists are written once, imports need no order tricks."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'drcnet'
COMMANDS = ('train', 'test', 'infer')


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


def test_no_command_imports_another_command():
    for command in COMMANDS:
        others = {f'drcnet.{c}' for c in COMMANDS if c != command}
        assert not imported_modules(PACKAGE / f'{command}.py') & others, command


def test_command_modules_need_no_import_order_suppressions_and_basicsr_still_imports():
    for command in ('train', 'test'):
        assert 'E402' not in (PACKAGE / f'{command}.py').read_text(), command
    # a fresh interpreter, each command module first: importing drcnet runs the torchvision alias before basicsr
    for first in ('drcnet.train', 'drcnet.test'):
        code = f'import {first}, basicsr.data.transforms, basicsr.archs; print("ok")'
        proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                              env={'PYTHONPATH': str(ROOT), 'PATH': '/usr/bin:/bin'})
        assert proc.stdout.strip() == 'ok', proc.stderr[-2000:]


def test_random_state_handling_lives_in_the_engine_not_in_the_model():
    model = PACKAGE / 'models' / 'image_restoration_model.py'
    defined = {n.name for n in ast.walk(ast.parse(model.read_text())) if isinstance(n, ast.FunctionDef)}
    assert not defined & {'capture_rng_state', 'restore_rng_state'}
    assert 'drcnet.engine.random_state' in imported_modules(PACKAGE / 'train.py')


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
