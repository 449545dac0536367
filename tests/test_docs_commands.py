"""Every command of the README's and the docs' shell blocks parses: each script's flags exist and take the values
written there, and so do the flags that sweep.py and bench.py hand on to train_search.py and train.py; a search's
flags also pass its checks of presets and spaces. demo.sh's commands too."""
import glob
import os
import re
import shlex

import pytest
from conftest import ROOT, load_script

from utils import UserError

PAGES = [os.path.join(ROOT, 'README.md'), os.path.join(ROOT, 'BENCHMARKS.md'),
         *sorted(glob.glob(os.path.join(ROOT, 'docs', '*.md'))), os.path.join(ROOT, 'demo.sh')]
SCRIPTS = ('train_search', 'train', 'test', 'visualize', 'sweep', 'bench', 'gpu_check')


def shell_commands():
    """(page, command line) of every script run in a shell block (or in demo.sh), its continuation lines joined,
    its shell variables replaced by the block's assignments or the first value of its for loops ("$@" by
    nothing)."""
    commands = []
    for page in PAGES:
        text = open(page, encoding='utf-8').read()
        for block in [text] if page.endswith('.sh') else re.findall(r'```(?:sh|bash)?\n(.*?)```', text, re.S):
            block = re.sub(r'\\\n\s*', ' ', block)
            # A value computed by the shell (demo.sh's folder) stands for itself, by its name.
            values = {name: name if '$(' in value else value.strip('"')
                      for name, value in re.findall(r'^(\w+)=("[^"]*"|\S+)$', block, re.M)}
            values.update(re.findall(r'\bfor (\w+) in (\S+)', block))
            for line in block.splitlines():
                for part in re.split(r';|\bdo\b|\bdone\b|\bthen\b|&&', line):
                    if re.match(r'\s*(exec\s+)?(python|torchrun)\b.*\b\w+\.py\b', part):
                        command = re.sub(r'\$\{?(\w+)\}?', lambda match, known=values: known[match.group(1)],
                                         part.replace('"$@"', ''))
                        commands.append((os.path.relpath(page, ROOT), command.strip()))
    return commands


def script_and_arguments(command):
    words = shlex.split(command, comments=True)
    index = next(i for i, word in enumerate(words) if word.endswith('.py'))
    return os.path.basename(words[index])[:-3], words[index + 1:]


def parses(script, argv):
    """None, or why `argv` does not parse with `script`'s parser."""
    module = load_script(script)
    try:
        args = module.build_parser().parse_args(argv)
        if script == 'train_search' and '--resume' not in argv:  # a preset's and a space's checks, before any data
            module.resolve_arguments(module.build_parser(), argv)
    except SystemExit:
        return f'{script}.py does not take {argv}'
    except UserError as error:
        return f'train_search.py refuses {argv}: {error}'
    if script == 'sweep' and args.methods:
        for method, space, dataset in ((m, s, d) for m in args.methods.split(',')
                                       for s in args.search_spaces.split(',') for d in args.datasets.split(',')):
            failure = parses('train_search', ['--method', method, '--search_space', space, '--dataset', dataset,
                                              *shlex.split(args.search_flags)])
            if failure:
                return failure
    handed_on = {'sweep': [('train', 'train_flags'), ('train', 'short_flags')],
                 'bench': [('train_search', 'search_flags')]}
    for inner, name in handed_on.get(script, []):
        failure = getattr(args, name) and parses(inner, shlex.split(getattr(args, name)))
        if failure:
            return failure
    return None


def test_the_pages_hold_a_command_for_every_script():
    scripts = {script_and_arguments(command)[0] for _, command in shell_commands()}
    assert scripts >= set(SCRIPTS), set(SCRIPTS) - scripts
    assert len(shell_commands()) > 100


@pytest.mark.parametrize('page, command', shell_commands(), ids=lambda value: value[:70])
def test_every_command_of_the_readme_and_the_docs_parses(page, command, capsys):
    script, argv = script_and_arguments(command)
    assert script in SCRIPTS, f'{page}: {command}'
    failure = parses(script, argv)
    assert failure is None, f'{page}: {command}\n{failure}\n{capsys.readouterr().err}'


@pytest.mark.parametrize('script', SCRIPTS)
def test_every_flag_of_every_script_has_help(script):
    parser = load_script(script).build_parser()
    assert [action.dest for action in parser._actions if action.dest != 'help' and not action.help] == []


# Flags of other tools that the pages name (pip, torchrun, TensorBoard, vulture), and the example method's own.
OTHER_TOOLS = {'--index-url', '--no-deps', '--nproc_per_node', '--nnodes', '--node_rank', '--master_addr',
               '--master_port', '--logdir', '--min-confidence', '--ignore-decorators', '--entropy_weight'}


def test_every_flag_the_pages_name_is_a_flag_of_a_script():
    known = {name for script in SCRIPTS for action in load_script(script).build_parser()._actions
             for name in action.option_strings}
    unknown = sorted({(os.path.relpath(page, ROOT), flag) for page in PAGES[:-1]
                      for flag in re.findall(r'(?<![\w-])(--[a-z][\w-]*)', open(page, encoding='utf-8').read())
                      if flag not in known | OTHER_TOOLS})
    assert unknown == []
