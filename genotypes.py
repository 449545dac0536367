"""The Genotype type, the published cells, and safe conversion to and from every text form.

A cell list holds two entries per intermediate node, `(op, input)` or `(op, input, attention)`;
input 0 is c_{k-2}, 1 is c_{k-1} and i+2 is node i. As in Att-DARTS, the op may be an attention
(`mixed_with_operation`) and the third item an op (`double_mixed`, two stacked layers).
Text is parsed by walking its syntax tree, never evaluated: only literals, lists, tuples,
`range(a, b)` and the `Genotype(...)` call pass.
"""
import ast
import difflib
import json
import os
from collections import namedtuple

from operations import NB201_PRIMITIVES, OPS
from utils import UserError

Genotype = namedtuple('Genotype', 'normal normal_concat reduce reduce_concat normal_bottleneck reduce_bottleneck',
                      defaults=('', ''))

# Att-DARTS's attention primitives, in its order; the names are those its genotypes and JSON files use.
ATTENTION_PRIMITIVES = ['Identity', 'SE', 'BAM', 'CBAM', 'GE_theta-plus', 'DoubleAttention']
FIELDS = Genotype._fields
CELL_FIELDS = ('normal', 'reduce')
MAX_NODES = 64
NB201_KEY = 'nas_bench_201'  # our genotype.json of a NAS-Bench-201 cell: {"nas_bench_201": "|op~0|+..."}


class GenotypeError(UserError):
    """A genotype text, file or name that cannot be used; the message says where and why."""


def _canonical_entry(entry):
    op, index, *rest = entry
    attention = rest[0] if rest else ''
    return (op, index, attention) if attention else (op, index)


def make_genotype(normal, normal_concat, reduce, reduce_concat, normal_bottleneck='', reduce_bottleneck=''):
    """A validated Genotype in canonical form: tuples, concat as lists, no empty attention slots."""
    validate_genotype(Genotype(normal, normal_concat, reduce, reduce_concat, normal_bottleneck, reduce_bottleneck))
    return Genotype(
        normal=[_canonical_entry(entry) for entry in normal], normal_concat=list(normal_concat),
        reduce=[_canonical_entry(entry) for entry in reduce], reduce_concat=list(reduce_concat),
        normal_bottleneck=normal_bottleneck or '', reduce_bottleneck=reduce_bottleneck or '')


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def validate_genotype(genotype):
    """Raise GenotypeError naming the first problem: structure, op, attention, input index or concat."""
    for cell in CELL_FIELDS:
        entries = getattr(genotype, cell)
        if not isinstance(entries, (list, tuple)) or not entries:
            raise GenotypeError(f'genotype field {cell!r} must be a non-empty list of (op, input) pairs')
        if len(entries) % 2:
            raise GenotypeError(f'genotype {cell} cell has {len(entries)} entries; every node needs exactly two '
                                f'inputs, so the count must be even')
        if len(entries) // 2 > MAX_NODES:
            raise GenotypeError(f'genotype {cell} cell has {len(entries) // 2} nodes, more than {MAX_NODES}')
        for position, entry in enumerate(entries):
            node = position // 2
            where = f'{cell}[{position}] (node {node}, {"first" if position % 2 == 0 else "second"} input)'
            if not isinstance(entry, (list, tuple)) or len(entry) not in (2, 3):
                raise GenotypeError(f'{where} must be (op, input) or (op, input, attention), got {entry!r}'[:300])
            op, index, *rest = entry
            if not isinstance(op, str) or (op not in OPS and op not in ATTENTION_PRIMITIVES[1:]):
                raise GenotypeError(f'{where}: unknown op {op!r}; valid ops are {", ".join(OPS)}'[:400])
            if not _is_int(index) or not 0 <= index < node + 2:
                raise GenotypeError(f'{where}: input {index!r} must be an integer from 0 to {node + 1} '
                                    f'(0 and 1 are the cell inputs, i + 2 is node i)')
            second = rest[0] if rest else ''
            if second not in ('', None) and (not isinstance(second, str)
                                             or (second not in ATTENTION_PRIMITIVES and second not in OPS)):
                raise GenotypeError(f'{where}: unknown attention {second!r}; valid attentions are '
                                    f'{", ".join(ATTENTION_PRIMITIVES)} (or an op, after `double_mixed`)'[:400])
        concat = getattr(genotype, f'{cell}_concat')
        states = len(entries) // 2 + 2
        if not isinstance(concat, (list, tuple, range)) or not concat:
            raise GenotypeError(f'genotype field {cell}_concat must be a non-empty list of state indices')
        for index in concat:
            if not _is_int(index) or not 0 <= index < states:
                raise GenotypeError(f'{cell}_concat index {index!r} is out of range: the {cell} cell has '
                                    f'states 0 to {states - 1}')
        if len(set(concat)) != len(concat):
            raise GenotypeError(f'{cell}_concat {list(concat)} repeats an index')
        bottleneck = getattr(genotype, f'{cell}_bottleneck')
        if bottleneck not in ('', None) and bottleneck not in ATTENTION_PRIMITIVES:
            raise GenotypeError(f'{cell}_bottleneck: unknown attention {bottleneck!r}; valid attentions are '
                                f'{", ".join(ATTENTION_PRIMITIVES)}'[:400])
    return genotype



class CellNB201(namedtuple('CellNB201', 'nodes')):
    """A NAS-Bench-201 cell: for each node 1, 2, 3, ... the (op, input) of its edges, in the benchmark's order.
    Node 0 is the cell's input and the last node its output; `str()` of it is the benchmark's architecture
    string, `|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|`."""
    __slots__ = ()

    def __str__(self):
        return '+'.join('|' + '|'.join(f'{op}~{source}' for op, source in node) + '|' for node in self.nodes)

    @property
    def edges(self):
        return [edge for node in self.nodes for edge in node]


def parse_nb201(text):
    """A CellNB201 from the benchmark's architecture string; each node must take every earlier node once."""
    nodes = []
    for position, node_text in enumerate(text.strip().split('+'), start=1):
        if len(node_text) < 2 or not (node_text.startswith('|') and node_text.endswith('|')):
            raise GenotypeError(f'node {position} of the NAS-Bench-201 string must look like |op~input|...|, '
                                f'not {node_text[:40]!r}')
        edges = []
        for edge in node_text[1:-1].split('|'):
            op, _, source = edge.partition('~')
            if op not in NB201_PRIMITIVES:
                raise GenotypeError(f'unknown NAS-Bench-201 op {op[:30]!r} at node {position}; use one of '
                                    f'{", ".join(NB201_PRIMITIVES)}')
            if not (source.isdigit() and source.isascii()) or int(source) >= position:
                raise GenotypeError(f'node {position} takes input {source[:10]!r}; it can take nodes 0 to '
                                    f'{position - 1} only, each as op~index')
            edges.append((op, int(source)))
        if sorted(source for _, source in edges) != list(range(position)):
            raise GenotypeError(f'node {position} must take each of nodes 0 to {position - 1} exactly once, as '
                                f'NAS-Bench-201 cells do')
        if position > MAX_NODES:
            raise GenotypeError(f'a NAS-Bench-201 cell of more than {MAX_NODES} nodes is not a cell')
        nodes.append(tuple(edges))
    return CellNB201(tuple(nodes))


# ---------------------------------------------------------------------------------------------
# Published cells.

NASNet = make_genotype(
    normal=[('sep_conv_5x5', 1), ('sep_conv_3x3', 0), ('sep_conv_5x5', 0), ('sep_conv_3x3', 0),
            ('avg_pool_3x3', 1), ('skip_connect', 0), ('avg_pool_3x3', 0), ('avg_pool_3x3', 0),
            ('sep_conv_3x3', 1), ('skip_connect', 1)],
    normal_concat=[2, 3, 4, 5, 6],
    reduce=[('sep_conv_5x5', 1), ('sep_conv_7x7', 0), ('max_pool_3x3', 1), ('sep_conv_7x7', 0),
            ('avg_pool_3x3', 1), ('sep_conv_5x5', 0), ('skip_connect', 3), ('avg_pool_3x3', 2),
            ('sep_conv_3x3', 2), ('max_pool_3x3', 1)],
    reduce_concat=[4, 5, 6])

AmoebaNet = make_genotype(
    normal=[('avg_pool_3x3', 0), ('max_pool_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_5x5', 2),
            ('sep_conv_3x3', 0), ('avg_pool_3x3', 3), ('sep_conv_3x3', 1), ('skip_connect', 1),
            ('skip_connect', 0), ('avg_pool_3x3', 1)],
    normal_concat=[4, 5, 6],
    reduce=[('avg_pool_3x3', 0), ('sep_conv_3x3', 1), ('max_pool_3x3', 0), ('sep_conv_7x7', 2),
            ('sep_conv_7x7', 0), ('avg_pool_3x3', 1), ('max_pool_3x3', 0), ('max_pool_3x3', 1),
            ('conv_7x1_1x7', 0), ('sep_conv_3x3', 5)],
    reduce_concat=[3, 4, 6])

def darts_style(normal, reduce):
    """A cell of four nodes whose output concatenates all four, as DARTS and its successors publish them."""
    return make_genotype(normal=normal, normal_concat=range(2, 6), reduce=reduce, reduce_concat=range(2, 6))


# DARTS (Liu et al., ICLR 2019), first-order search: 3.00% error on CIFAR-10.
DARTS_V1 = darts_style(
    normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), ('sep_conv_3x3', 1),
            ('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2)],
    reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0),
            ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)])

# DARTS, second-order search: the cell of the paper, 2.76% on CIFAR-10 and 26.7% top-1 on ImageNet.
DARTS_V2 = darts_style(
    normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1),
            ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)],
    reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1),
            ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)])

# PC-DARTS (Xu et al., ICLR 2020), searched on CIFAR-10 in 0.1 GPU-days: 2.57%.
PC_DARTS_cifar = darts_style(
    normal=[('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 0), ('dil_conv_3x3', 1),
            ('sep_conv_5x5', 0), ('sep_conv_3x3', 1), ('avg_pool_3x3', 0), ('dil_conv_3x3', 1)],
    reduce=[('sep_conv_5x5', 1), ('max_pool_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_5x5', 2),
            ('sep_conv_3x3', 0), ('sep_conv_3x3', 3), ('sep_conv_3x3', 1), ('sep_conv_3x3', 2)])

# PC-DARTS searched on ImageNet directly: 24.2% top-1.
PC_DARTS_image = darts_style(
    normal=[('skip_connect', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 0), ('skip_connect', 1),
            ('sep_conv_3x3', 1), ('sep_conv_3x3', 3), ('sep_conv_3x3', 1), ('dil_conv_5x5', 4)],
    reduce=[('sep_conv_3x3', 0), ('skip_connect', 1), ('dil_conv_5x5', 2), ('max_pool_3x3', 1),
            ('sep_conv_3x3', 2), ('sep_conv_3x3', 1), ('sep_conv_5x5', 0), ('sep_conv_3x3', 3)])

# Att-DARTS (Nakai et al., 2020), ops and attentions searched together: 2.54% on CIFAR-10.
Att_DARTS = darts_style(
    normal=[('sep_conv_3x3', 0, 'DoubleAttention'), ('sep_conv_3x3', 1, 'CBAM'), ('sep_conv_3x3', 0, 'CBAM'),
            ('skip_connect', 2, 'CBAM'), ('skip_connect', 0, 'CBAM'), ('sep_conv_3x3', 1, 'CBAM'),
            ('skip_connect', 0, 'CBAM'), ('skip_connect', 2, 'CBAM')],
    reduce=[('max_pool_3x3', 0, 'BAM'), ('dil_conv_3x3', 1, 'DoubleAttention'), ('avg_pool_3x3', 0, 'BAM'),
            ('skip_connect', 2, 'CBAM'), ('skip_connect', 2, 'CBAM'), ('avg_pool_3x3', 0, 'BAM'),
            ('skip_connect', 2, 'CBAM'), ('avg_pool_3x3', 0, 'BAM')])

# Read off the normal and reduction cell figures of the alpha-DARTS paper's repository.
ALPHA_DARTS = darts_style(
    normal=[('sep_conv_5x5', 0), ('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_5x5', 2),
            ('max_pool_3x3', 0), ('avg_pool_3x3', 3), ('dil_conv_5x5', 4), ('sep_conv_5x5', 1)],
    reduce=[('max_pool_3x3', 1), ('max_pool_3x3', 0), ('max_pool_5x5', 1), ('sep_conv_5x5', 0),
            ('max_pool_3x3', 3), ('max_pool_5x5', 0), ('sep_conv_5x5', 3), ('max_pool_3x3', 0)])

DARTS = DARTS_V2
PCDARTS = PC_DARTS_cifar

GENOTYPES = {
    'NASNet': NASNet, 'AmoebaNet': AmoebaNet, 'DARTS_V1': DARTS_V1, 'DARTS_V2': DARTS_V2, 'DARTS': DARTS,
    'PC_DARTS_cifar': PC_DARTS_cifar, 'PC_DARTS_image': PC_DARTS_image, 'PCDARTS': PCDARTS,
    'Att_DARTS': Att_DARTS, 'ALPHA_DARTS': ALPHA_DARTS,
}


# ---------------------------------------------------------------------------------------------
# Reading.

def _flatten_cell(cell, entries):
    """Accept the flat DARTS list or the nested per-node list of DADARTS and pt.darts."""
    if not isinstance(entries, (list, tuple)):
        raise GenotypeError(f'genotype field {cell!r} must be a list of (op, input) pairs, '
                            f'got {type(entries).__name__}')
    if entries and all(isinstance(node, (list, tuple)) and node and isinstance(node[0], (list, tuple))
                       for node in entries):
        for position, node in enumerate(entries):
            if len(node) != 2:
                raise GenotypeError(f'{cell} node {position} has {len(node)} inputs; every node needs exactly two')
        return [tuple(entry) for node in entries for entry in node]
    return [tuple(entry) if isinstance(entry, (list, tuple)) else entry for entry in entries]


def genotype_from_fields(fields, origin='genotype'):
    """Build a Genotype from a dict of its fields (ours, Att-DARTS's genotype.json) or a 4/6-item list; a
    CellNB201 from our {"nas_bench_201": STRING}."""
    if isinstance(fields, dict) and set(fields) == {NB201_KEY}:
        if not isinstance(fields[NB201_KEY], str):
            raise GenotypeError(f'{origin}: {NB201_KEY} must be an architecture string')
        return parse_nb201(fields[NB201_KEY])
    if isinstance(fields, (list, tuple)) and len(fields) in (4, 6):
        fields = dict(zip(FIELDS, fields))
    if not isinstance(fields, dict):
        raise GenotypeError(f'{origin} must describe a Genotype with fields {", ".join(FIELDS[:4])}')
    unknown = [key for key in fields if key not in FIELDS]
    missing = [key for key in FIELDS[:4] if key not in fields]
    if unknown or missing:
        problem = f'unknown field {unknown[0]!r}' if unknown else f'missing field {missing[0]!r}'
        raise GenotypeError(f'{origin} has {problem}; a Genotype has {", ".join(FIELDS)}'[:300])
    cells = {cell: _flatten_cell(cell, fields[cell]) for cell in CELL_FIELDS}
    for cell in CELL_FIELDS:
        concat = fields[f'{cell}_concat']
        if not isinstance(concat, (list, tuple, range)):
            raise GenotypeError(f'{cell}_concat must be a list of state indices, got {concat!r}'[:300])
        bottleneck = fields.get(f'{cell}_bottleneck', '')
        if bottleneck is not None and not isinstance(bottleneck, str):
            raise GenotypeError(f'{cell}_bottleneck must be an attention name or empty, got {bottleneck!r}'[:300])
    return make_genotype(normal=cells['normal'], normal_concat=fields['normal_concat'],
                         reduce=cells['reduce'], reduce_concat=fields['reduce_concat'],
                         normal_bottleneck=fields.get('normal_bottleneck') or '',
                         reduce_bottleneck=fields.get('reduce_bottleneck') or '')


def _literal(node):
    """Convert an admitted syntax node to a Python value; anything else is refused."""
    if isinstance(node, ast.Constant) and (isinstance(node.value, (str, int)) or node.value is None):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
            and _is_int(node.operand.value):
        return -node.operand.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(element) for element in node.elts]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'range' \
            and not node.keywords and 1 <= len(node.args) <= 2:
        bounds = [_literal(arg) for arg in node.args]
        if not all(_is_int(bound) and abs(bound) <= MAX_NODES + 2 for bound in bounds):
            raise GenotypeError(f'range{tuple(bounds)} in genotype text must have small integer bounds')
        return list(range(*bounds))
    what = type(node).__name__
    if isinstance(node, ast.Call):
        what = f'a call to {ast.unparse(node.func)[:40]}()'
    elif isinstance(node, ast.Name):
        what = f'the name {node.id!r}'
    elif isinstance(node, ast.Attribute):
        what = 'an attribute access'
    raise GenotypeError(f'genotype text may only hold literals, lists, tuples and range(a, b); found {what}')


def genotype_from_text(text):
    """Parse `Genotype(normal=..., ...)` (the repr DARTS logs print, flat or nested) without evaluating it."""
    try:
        tree = ast.parse(text.strip(), mode='eval')
    except (SyntaxError, ValueError, RecursionError, MemoryError, TypeError) as error:
        raise GenotypeError(f'genotype text is not valid syntax ({type(error).__name__}); expected '
                            f'Genotype(normal=[...], normal_concat=..., reduce=[...], reduce_concat=...)') from None
    call = tree.body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == 'Genotype'):
        raise GenotypeError('genotype text must be a single Genotype(...) call, a published name or a JSON file')
    try:
        if len(call.args) > len(FIELDS) or any(keyword.arg is None for keyword in call.keywords):
            raise GenotypeError('Genotype(...) takes at most six fields and no ** arguments')
        fields = dict(zip(FIELDS, (_literal(arg) for arg in call.args)))
        for keyword in call.keywords:
            if keyword.arg in fields:
                raise GenotypeError(f'Genotype(...) gives the field {keyword.arg!r} twice')
            fields[keyword.arg] = _literal(keyword.value)
    except RecursionError:
        raise GenotypeError('genotype text is nested too deeply') from None
    return genotype_from_fields(fields, origin='Genotype(...) text')


def genotype_from_json_text(text, origin='genotype JSON'):
    try:
        fields = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise GenotypeError(f'{origin} is not valid JSON ({str(error)[:80]})') from None
    return genotype_from_fields(fields, origin=origin)


def parse_genotype(source):
    """A Genotype from any accepted form: a Genotype, a published name, a JSON file (ours or Att-DARTS's),
    a text file holding a repr, the repr DARTS logs print, the nested per-node form, or JSON text; or a
    CellNB201 from NAS-Bench-201's architecture string (as text, in a file, or in our genotype.json)."""
    if isinstance(source, Genotype):
        return make_genotype(*source)
    if isinstance(source, CellNB201):
        return parse_nb201(str(source))
    if not isinstance(source, str):
        raise GenotypeError(f'a genotype must be a name, a file or text, got {type(source).__name__}')
    text = source.strip()
    if text in GENOTYPES:
        return GENOTYPES[text]
    if text.startswith('|'):
        return parse_nb201(text)
    if text.startswith('Genotype') or '(' in text:
        return genotype_from_text(text)
    if text.startswith(('{', '[')):
        return genotype_from_json_text(text)
    shown = text if text.isprintable() else repr(text)  # messages stay one line whatever the name holds
    if os.path.isfile(text):
        try:
            with open(text, encoding='utf-8') as f:
                content = f.read()
        except (OSError, UnicodeDecodeError) as error:
            raise GenotypeError(f'cannot read genotype file {shown} ({error})') from None
        content = content.strip()
        if content.startswith('|'):
            return parse_nb201(content)
        if content.startswith(('{', '[')):
            return genotype_from_json_text(content, origin=shown)
        if content.startswith('Genotype'):
            return genotype_from_text(content)
        raise GenotypeError(f'{shown} holds neither genotype JSON, a Genotype(...) text nor a NAS-Bench-201 string')
    if text.endswith('.json') or os.sep in text:
        raise GenotypeError(f'genotype file {shown} does not exist')
    close = difflib.get_close_matches(text, GENOTYPES, n=1, cutoff=0.6)
    hint = f' (did you mean {close[0]}?)' if close else ''
    raise GenotypeError(f'unknown genotype {text[:60]!r}{hint}; use one of {", ".join(GENOTYPES)}, a genotype.json '
                        f'file, Genotype(...) text or a NAS-Bench-201 string |op~0|+|...|')


def genotype_from_flags(text=None, path=None, name=None, default='DARTS', space='darts'):
    """(genotype, where it came from, for the log) from the scripts' --genotype, --arch_path and --arch, in
    that order of precedence; it must be a cell of --search_space `space`."""
    if text:
        genotype, source = parse_genotype(text), 'given as --genotype'
    elif path:
        genotype, source = parse_genotype(path), f'read from {path}'
    elif name or space == 'darts':
        genotype, source = parse_genotype(name or default), name or f'{default} (the default)'
    else:
        raise GenotypeError('--search_space nas_bench_201 needs a NAS-Bench-201 architecture string, such as '
                            '|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|'
                            'nor_conv_3x3~2|, in --arch, --arch_path or --genotype')
    if isinstance(genotype, CellNB201) != (space == 'nas_bench_201'):
        kind = 'a NAS-Bench-201 cell' if isinstance(genotype, CellNB201) else 'a DARTS cell'
        raise GenotypeError(f'the cell {source} is {kind}; give --search_space '
                            f'{"nas_bench_201" if isinstance(genotype, CellNB201) else "darts"} with it')
    return genotype, source


# ---------------------------------------------------------------------------------------------
# Writing.

def genotype_to_dict(genotype):
    """Our genotype.json content. Every entry is an [op, input, attention] triple (attention "" when
    absent) because Att-DARTS's loader reads three items per entry. A NAS-Bench-201 cell is its string."""
    if isinstance(genotype, CellNB201):
        return {NB201_KEY: str(genotype)}
    fields = {}
    for cell in CELL_FIELDS:
        fields[cell] = [[entry[0], entry[1], entry[2] if len(entry) > 2 else ''] for entry in getattr(genotype, cell)]
        fields[f'{cell}_concat'] = list(getattr(genotype, f'{cell}_concat'))
    for cell in CELL_FIELDS:
        fields[f'{cell}_bottleneck'] = getattr(genotype, f'{cell}_bottleneck') or ''
    return fields


def save_genotype(genotype, path):
    with open(path, 'w') as f:
        json.dump(genotype_to_dict(genotype), f, indent=2)
        f.write('\n')


def _concat_text(concat):
    concat = list(concat)
    if concat == list(range(concat[0], concat[0] + len(concat))):
        return f'range({concat[0]}, {concat[0] + len(concat)})'
    return repr(concat)


def genotype_repr(genotype):
    """The text DARTS logs print (bottleneck fields only when set), which `parse_genotype` reads back; for
    a NAS-Bench-201 cell, its architecture string."""
    if isinstance(genotype, CellNB201):
        return str(genotype)
    parts = []
    for cell in CELL_FIELDS:
        parts.append(f'{cell}={list(getattr(genotype, cell))!r}')
        parts.append(f'{cell}_concat={_concat_text(getattr(genotype, f"{cell}_concat"))}')
    order = [parts[0], parts[1], parts[2], parts[3]]
    for cell in CELL_FIELDS:
        if getattr(genotype, f'{cell}_bottleneck'):
            order.append(f'{cell}_bottleneck={getattr(genotype, f"{cell}_bottleneck")!r}')
    return f'Genotype({", ".join(order)})'


def count_ops(genotype, op='skip_connect', cell='normal'):
    """How many edges of a cell type carry `op` (a NAS-Bench-201 cell has one type)."""
    edges = genotype.edges if isinstance(genotype, CellNB201) else getattr(genotype, cell)
    return sum(entry[0] == op for entry in edges)
