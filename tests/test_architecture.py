"""The package's subpackages depend on each other one way (README, Architecture)."""
import ast
import os

import pytest

from conftest import REPO

PACKAGE = os.path.join(REPO, 'inception')
# Each subpackage and what it may import besides itself. The top-level
# modules (errors, interrupt, provenance) are shared by all and import none.
ALLOWED = {
    'core': set(),
    'kernels': {'core'},
    'models': {'core', 'kernels'},
    'data': {'core'},
    'training': {'core', 'kernels', 'models', 'data'},
    'sweeps': {'core', 'kernels', 'models', 'data', 'training'},
    'cli': {'core', 'kernels', 'models', 'data', 'training', 'sweeps'},
}


def _layer(module: str) -> str:
  """'inception.models.flops' -> 'models'; top-level modules -> 'core'."""
  parts = module.split('.')
  if len(parts) > 1 and parts[1] in ALLOWED:
    return parts[1]
  return 'core'


def _imports(path: str, module: str):
  """Every inception module ``path`` imports (at any depth in the file)."""
  with open(path, encoding='utf-8') as f:
    tree = ast.parse(f.read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.split('.')[0] == 'inception':
          yield alias.name
    elif isinstance(node, ast.ImportFrom) and node.module and (
        node.module.split('.')[0] == 'inception'):
      for alias in node.names:  # `from inception.x import y`: y may be a module
        yield f'{node.module}.{alias.name}'


def _modules():
  for root, _, files in os.walk(PACKAGE):
    for name in sorted(files):
      if name.endswith('.py'):
        path = os.path.join(root, name)
        rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, '.')
        yield path, rel.removesuffix('.__init__')


def test_every_module_lives_in_a_subpackage_or_is_shared():
  top = sorted(m for path, m in _modules() if m.count('.') == 1
               and not path.endswith('__init__.py'))
  assert top == ['inception.errors', 'inception.interrupt',
                 'inception.provenance'], top


@pytest.mark.parametrize('path,module', list(_modules()),
                         ids=lambda v: v if '.' in v and '/' not in v else '')
def test_dependencies_point_one_way(path, module):
  layer = _layer(module)
  wrong = sorted({imported for imported in _imports(path, module)
                  if _layer(imported) not in ALLOWED[layer] | {layer}})
  assert not wrong, f'{module} ({layer}) imports {wrong}'


def test_the_rule_itself_catches_a_wrong_import(tmp_path):
  """A kernels module that imports training is caught (the test can fail)."""
  path = tmp_path / 'bad.py'
  path.write_text('from inception.training import specs\n')
  layer = _layer('inception.kernels.bad')
  assert [m for m in _imports(str(path), 'inception.kernels.bad')
          if _layer(m) not in ALLOWED[layer] | {layer}] == [
              'inception.training.specs']


COMMANDS = ('train', 'eval', 'sweep', 'report', 'flops', 'export')


def test_every_command_is_a_thin_file_over_its_cli_module():
  """One pattern: root NAME.py -> inception/cli/NAME.py (absl) -> one library call."""
  import tomllib  # pylint: disable=g-import-not-at-top
  assert sorted(f[:-3] for f in os.listdir(REPO) if f.endswith('.py')) == (
      sorted(COMMANDS))
  for name in COMMANDS:
    with open(os.path.join(REPO, f'{name}.py'), encoding='utf-8') as f:
      tree = ast.parse(f.read())
    code = [ast.unparse(node) for node in tree.body[1:]]  # after the docstring
    assert code == [
        'from inception import interrupt', 'interrupt.install()',
        f'from inception.cli import {name} as command',
        "if __name__ == '__main__':\n    command.run()"], name
    with open(os.path.join(PACKAGE, 'cli', f'{name}.py'),
              encoding='utf-8') as f:
      source = f.read()
    assert 'from absl import' in source and 'argparse' not in source, name
    assert '\ndef run():' in source, name
  with open(os.path.join(REPO, 'pyproject.toml'), 'rb') as f:
    scripts = tomllib.load(f)['project']['scripts']
  assert scripts == {f'inception-{n}': f'inception.cli.{n}:run'
                     for n in COMMANDS}
