"""One self-contained HTML page of a run folder (visualize.py --report): the run's final numbers, its curves,
its cells, the history of its architecture weights (a search) and its arguments.

Figures are embedded as PNG data and the cells as inline SVG, so the page is one file that opens anywhere,
offline, and can be shared as it is.
"""
import base64
import html
import io
import json
import os
from datetime import datetime

import checkpoints
import drawing
import genotypes
import utils

SCALARS = (int, float)


def read_run(exp_dir):
    """(arguments, metrics rows, genotype or None) of a train.py or train_search.py folder."""
    rows = drawing.load_metrics(exp_dir, '--report', 'train.py or train_search.py')
    args_path = os.path.join(exp_dir, 'args.json')
    with open(args_path) if os.path.isfile(args_path) else io.StringIO('{}') as f:
        args = json.load(f)
    genotype = None
    if os.path.isfile(os.path.join(exp_dir, 'genotype.json')):
        genotype = genotypes.parse_genotype(os.path.join(exp_dir, 'genotype.json'))
    elif os.path.isfile(os.path.join(exp_dir, 'checkpoint.pt')):
        stored = checkpoints.load_checkpoint(os.path.join(exp_dir, 'checkpoint.pt')).get('genotype')
        genotype = genotypes.parse_genotype(json.dumps(stored)) if stored else None
    return args, rows, genotype


def embedded(png):
    """An <img> with the PNG inside."""
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(png.getvalue()).decode()}">'


def figure(plot, *args):
    """A matplotlib figure of drawing.py, embedded."""
    png = io.BytesIO()
    plot(*args, png)
    return embedded(png)


def cell_drawings(genotype):
    """The cells as inline SVG, or a sentence on why they are missing."""
    if genotype is None:
        return '<p>The folder holds no cell.</p>'
    try:
        with drawing.graphviz_dot('the cells are not drawn'):
            return '\n'.join(f'<h3>{graph.name}</h3>\n' + graph.pipe(format='svg').decode()
                             for graph in drawing.cell_graphs(genotype))
    except utils.UserError as error:
        return f'<p>{html.escape(str(error))}</p><pre>{html.escape(genotypes.genotype_repr(genotype))}</pre>'


def table(pairs):
    return '<table>' + ''.join(f'<tr><th>{html.escape(str(key))}</th><td>{html.escape(str(value))}</td></tr>'
                               for key, value in pairs) + '</table>'


def final_numbers(rows):
    last = rows[-1]
    best = [(f'best {key}', f'{max(row[key] for row in rows if key in row):.2f} (epoch '
             f'{max(rows, key=lambda row: row.get(key, float("-inf")))["epoch"]})')
            for key in ('valid_top1', 'test_top1') if key in last]
    scalars = [(key, f'{value:.4g}' if isinstance(value, float) else value) for key, value in last.items()
               if isinstance(value, SCALARS) and not isinstance(value, bool)]
    return table([('epochs run', len(rows)), *best, *scalars])


def search_sections(rows):
    """The figures only a search has: skip connections, method terms, the architecture weights per edge."""
    sections = [('Validation accuracy and skip connections', figure(drawing.plot_progress, rows))]
    terms = io.BytesIO()
    if drawing.plot_terms(rows, terms):  # only when a term moves
        sections.append(('Terms of the search methods', embedded(terms)))
    for cell, fields in rows[-1]['arch_weights'].items():
        for field in fields:
            labels = genotypes.ATTENTION_PRIMITIVES if field == 'attention' else rows[-1]['op_names']
            sections.append((f'Architecture weights: {cell} cell, {field}',
                             figure(drawing.plot_edges, rows, cell, field, labels)))
    return sections


STYLE = ('body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}'
         'table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:2px 8px;text-align:left;'
         'font-size:90%}img,svg{max-width:100%;height:auto}h2{border-bottom:1px solid #ddd}')


def write_report(exp_dir, run, path):
    """Write the page of `exp_dir`, whose `run` read_run read, to `path`; returns `path`."""
    args, rows, genotype = run
    search = 'arch_weights' in rows[-1]
    name = os.path.basename(os.path.normpath(exp_dir))
    sections = [('Final numbers', final_numbers(rows)),
                ('Loss and accuracy', figure(drawing.plot_curves, rows)),
                ('Cells' if search else 'Cell', cell_drawings(genotype))]
    if search:
        sections += search_sections(rows)
    sections.append(('Arguments', table(sorted(args.items()))))
    body = '\n'.join(f'<h2>{html.escape(title)}</h2>\n{content}' for title, content in sections)
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(name)}</title>'
            f'<style>{STYLE}</style></head><body>\n<h1>{html.escape(name)}</h1>\n'
            f'<p>{"A search" if search else "A training run"}, reported {datetime.now():%Y-%m-%d %H:%M} from '
            f'{html.escape(os.path.abspath(exp_dir))}.</p>\n{body}\n</body></html>\n')
    utils.write_text_atomically(path, page)
    return path
