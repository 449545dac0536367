import json
import os
import subprocess

import pytest

import genotypes
from genotypes import GENOTYPES, GenotypeError, parse_genotype

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DADARTS_TEXT = (
    "Genotype(normal=[[('max_pool_3x3', 0), ('max_pool_3x3', 1)], [('max_pool_3x3', 2), ('max_pool_3x3', 0)], "
    "[('max_pool_3x3', 3), ('max_pool_3x3', 0)], [('max_pool_3x3', 4), ('max_pool_3x3', 0)]], "
    "normal_concat=[2, 3, 4, 5], reduce=[[('dil_conv_3x3', 0), ('dil_conv_3x3', 1)], "
    "[('max_pool_3x3', 2), ('sep_conv_3x3', 0)], [('max_pool_3x3', 2), ('max_pool_3x3', 3)], "
    "[('max_pool_3x3', 2), ('max_pool_3x3', 3)]], reduce_concat=[2, 3, 4, 5])")

# The line DARTS's train_search.py logs (range concat, flat list).
DARTS_LOG_TEXT = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
    "normal_concat=range(2, 6), reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
    "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], "
    "reduce_concat=range(2, 6))")

# Att-DARTS's own genotype.json for its published cell (dict with triples and bottleneck fields).
ATT_DARTS_JSON = {
    'normal': [['sep_conv_3x3', 0, 'DoubleAttention'], ['sep_conv_3x3', 1, 'CBAM'], ['sep_conv_3x3', 0, 'CBAM'],
               ['skip_connect', 2, 'CBAM'], ['skip_connect', 0, 'CBAM'], ['sep_conv_3x3', 1, 'CBAM'],
               ['skip_connect', 0, 'CBAM'], ['skip_connect', 2, 'CBAM']],
    'normal_concat': [2, 3, 4, 5],
    'reduce': [['max_pool_3x3', 0, 'BAM'], ['dil_conv_3x3', 1, 'DoubleAttention'], ['avg_pool_3x3', 0, 'BAM'],
               ['skip_connect', 2, 'CBAM'], ['skip_connect', 2, 'CBAM'], ['avg_pool_3x3', 0, 'BAM'],
               ['skip_connect', 2, 'CBAM'], ['avg_pool_3x3', 0, 'BAM']],
    'reduce_concat': [2, 3, 4, 5],
    'normal_bottleneck': '', 'reduce_bottleneck': '',
}


def roundtrip(genotype, tmp_path):
    path = tmp_path / 'genotype.json'
    genotypes.save_genotype(genotype, path)
    return parse_genotype(str(path))


@pytest.mark.parametrize('name', sorted(GENOTYPES))
def test_published_genotypes_roundtrip_through_json_and_repr(name, tmp_path):
    genotype = GENOTYPES[name]
    assert parse_genotype(name) == genotype
    assert roundtrip(genotype, tmp_path) == genotype
    assert parse_genotype(genotypes.genotype_repr(genotype)) == genotype


def test_aliases_and_alpha_darts_cell():
    assert GENOTYPES['DARTS'] == genotypes.DARTS_V2
    assert GENOTYPES['PCDARTS'] == genotypes.PC_DARTS_cifar
    alpha = genotypes.ALPHA_DARTS
    assert alpha.normal[6] == ('dil_conv_5x5', 4)
    assert [op for op, _ in alpha.reduce].count('max_pool_5x5') == 2
    assert alpha.normal_concat == [2, 3, 4, 5]


def test_darts_log_line_parses_to_darts_v2():
    assert parse_genotype(DARTS_LOG_TEXT) == genotypes.DARTS_V2


def test_nested_dadarts_form_parses_and_roundtrips(tmp_path):
    genotype = parse_genotype(DADARTS_TEXT)
    assert genotype.normal[:3] == [('max_pool_3x3', 0), ('max_pool_3x3', 1), ('max_pool_3x3', 2)]
    assert genotype.reduce[3] == ('sep_conv_3x3', 0)
    assert roundtrip(genotype, tmp_path) == genotype


def test_att_darts_json_file_and_json_text(tmp_path):
    path = tmp_path / 'att.json'
    path.write_text(json.dumps(ATT_DARTS_JSON))
    assert parse_genotype(str(path)) == genotypes.Att_DARTS
    assert parse_genotype(json.dumps(ATT_DARTS_JSON)) == genotypes.Att_DARTS


def test_our_json_is_readable_the_att_darts_way(tmp_path):
    """Att-DARTS's loader reads entry[0..2] and the bottleneck keys: our file must offer them."""
    path = tmp_path / 'genotype.json'
    genotypes.save_genotype(genotypes.DARTS_V2, path)
    saved = json.loads(path.read_text())
    assert all(len(entry) == 3 for entry in saved['normal'] + saved['reduce'])
    assert saved['normal_bottleneck'] == '' and saved['reduce_concat'] == [2, 3, 4, 5]


def test_text_file_with_a_repr(tmp_path):
    path = tmp_path / 'cell.txt'
    path.write_text(DARTS_LOG_TEXT + '\n')
    assert parse_genotype(str(path)) == genotypes.DARTS_V2


def test_genotype_with_bottleneck_roundtrips(tmp_path):
    genotype = genotypes.make_genotype(genotypes.DARTS_V2.normal, range(2, 6), genotypes.DARTS_V2.reduce,
                                       range(2, 6), normal_bottleneck='SE', reduce_bottleneck='CBAM')
    assert roundtrip(genotype, tmp_path) == genotype
    assert parse_genotype(genotypes.genotype_repr(genotype)) == genotype


MALFORMED = [
    ('DARTS_V3', 'did you mean DARTS_V2'),
    ('missing.json', 'does not exist'),
    ('runs/\nmissing.json', "genotype file 'runs/\\nmissing.json' does not exist"),
    ("Genotype(normal=[('sep_conv_9x9', 0), ('sep_conv_3x3', 1)], normal_concat=[2], "
     "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], reduce_concat=[2])", "unknown op 'sep_conv_9x9'"),
    ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 2)], normal_concat=[2], "
     "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], reduce_concat=[2])", 'normal[1] (node 0, second input)'),
    ("Genotype(normal=[('sep_conv_3x3', 0, 'XYZ'), ('sep_conv_3x3', 1)], normal_concat=[2], "
     "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], reduce_concat=[2])", "unknown attention 'XYZ'"),
    ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 2)], normal_concat=[2], "
     "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], reduce_concat=[2])", 'must be even'),
    ("Genotype(normal=[[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 1)]], normal_concat=[2], "
     "reduce=[[('max_pool_3x3', 0), ('max_pool_3x3', 1)]], reduce_concat=[2])", 'node 0 has 3 inputs'),
    ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], normal_concat=[2, 7], "
     "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], reduce_concat=[2])", 'normal_concat index 7 is out of range'),
    ("Genotype(normal=__import__('os').system('touch PWNED'), normal_concat=[2], reduce=[], reduce_concat=[])",
     "found a call to __import__('os').system()"),
    ("Genotype(normal=[('sep_conv_3x3', 0)] * 2, normal_concat=[2], reduce=[], reduce_concat=[])",
     'found BinOp'),
    ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)", 'not valid syntax'),
    ('{"normal": [], "normal_concat": [2]}', "missing field 'reduce'"),
    ('{"normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1]], "normal_concat": [2], "reduce": '
     '[["max_pool_3x3", 0], ["max_pool_3x3", 1]], "reduce_concat": [2], "extra": 1}', "unknown field 'extra'"),
    ('{"normal": [["sep_conv_3x3", 0.5], ["sep_conv_3x3", 1]], "normal_concat": [2], "reduce": '
     '[["max_pool_3x3", 0], ["max_pool_3x3", 1]], "reduce_concat": [2]}', 'input 0.5 must be an integer'),
    ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], normal_concat=range(0, 10**9), "
     "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], reduce_concat=[2])", 'found BinOp'),
    ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], normal_concat=range(0, 1000000000), "
     "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], reduce_concat=[2])", 'small integer bounds'),
    ('{"normal": ', 'is not valid JSON'),
]


@pytest.mark.parametrize('text, expected', MALFORMED)
def test_malformed_inputs_give_one_sentence_naming_the_problem(text, expected, in_tmp):
    with pytest.raises(GenotypeError) as info:
        parse_genotype(text)
    message = str(info.value)
    assert expected in message
    assert '\n' not in message
    assert not (in_tmp / 'PWNED').exists()


def test_no_eval_or_exec_in_the_project():
    """Genotype text is parsed, never evaluated: no eval( or exec( call outside the tests."""
    result = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard', '*.py'],
                            cwd=ROOT, capture_output=True, text=True, check=True)
    offenders = []
    for path in result.stdout.split():
        if path.startswith('tests/'):
            continue
        with open(os.path.join(ROOT, path)) as f:
            for number, line in enumerate(f, 1):
                code = line.split('#')[0]
                for word in ('eval(', 'exec('):
                    index = code.find(word)
                    if index >= 0 and (index == 0 or not (code[index - 1].isalnum() or code[index - 1] in '._')):
                        offenders.append(f'{path}:{number}')
    assert not offenders, offenders


def test_count_skips():
    assert genotypes.count_ops(genotypes.DARTS_V2, 'skip_connect') == 2
    assert genotypes.count_ops(genotypes.DARTS_V1, 'skip_connect', 'reduce') == 3
