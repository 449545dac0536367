"""The code base keeps no unused code: vulture at 60% confidence finds nothing beyond its whitelist. A method
class is used through its @register decorator (methods.REGISTRY), which vulture is told to see through. And
every link of the README and the docs leads to a file and a header that exist. Modules and functions stay
short enough to read (issue 24's measure: no module over 450 lines, no function over 60)."""
import ast
import glob
import os
import re
import subprocess
import sys

from conftest import ROOT


def test_vulture_finds_no_unused_code():
    modules = sorted(glob.glob(os.path.join(ROOT, '*.py')))
    result = subprocess.run([sys.executable, '-m', 'vulture', '--min-confidence', '60', '--ignore-decorators',
                             '@register', *modules,
                             os.path.join(ROOT, 'tests', 'vulture_whitelist.py')], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stdout, result.stdout + result.stderr


def anchors(path):
    """GitHub's anchors of a Markdown file's headers."""
    headers = re.findall(r'^#+ (.*)$', open(path, encoding='utf-8').read(), re.M)
    return {re.sub(r'[^\w\- ]', '', header.lower()).replace(' ', '-') for header in headers}


def test_every_link_of_the_readme_and_the_docs_leads_somewhere():
    pages = [os.path.join(ROOT, 'README.md'), *sorted(glob.glob(os.path.join(ROOT, 'docs', '*.md')))]
    broken = []
    for page in pages:
        text = re.sub(r'```.*?```', '', open(page, encoding='utf-8').read(), flags=re.S)
        for target in re.findall(r'\]\(([^)\s]+)\)', text):
            if target.startswith('http'):
                continue
            path, _, anchor = target.partition('#')
            resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            if not os.path.exists(resolved) or (anchor and anchor not in anchors(resolved)):
                broken.append(f'{os.path.relpath(page, ROOT)}: {target}')
    assert not broken, broken


def test_the_readmes_tables_name_every_script_and_module_once():
    readme = open(os.path.join(ROOT, 'README.md'), encoding='utf-8').read()
    listed = re.findall(r'^\| `([a-z_0-9]+\.py)` \|', readme, re.M)
    assert sorted(listed) == sorted(os.path.basename(path) for path in glob.glob(os.path.join(ROOT, '*.py')))


def test_no_module_is_over_450_lines_and_no_function_over_60():
    too_long = []
    for path in sorted(glob.glob(os.path.join(ROOT, '*.py'))):
        source = open(path, encoding='utf-8').read()
        name, lines = os.path.basename(path), source.count('\n')
        if lines > 450:
            too_long.append(f'{name}: {lines} lines')
        too_long += [f'{name}: {node.name}() {node.end_lineno - node.lineno + 1} lines' for node in
                     ast.walk(ast.parse(source)) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                     and node.end_lineno - node.lineno + 1 > 60]
    assert not too_long, too_long
