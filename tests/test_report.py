"""visualize.py --report: one self-contained HTML page of a search or a training run, opened in a real
headless browser (Chromium), where every embedded figure must decode and every cell drawing render."""
import base64
import re
import shutil
import subprocess

import pytest
from conftest import load_script

from utils import UserError

visualize = load_script('visualize')
BROWSER = next((shutil.which(name) for name in ('chromium', 'chromium-browser', 'google-chrome') if shutil.which(name)),
               None)
TINY = ['--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size', '64', '--synthetic_test_size',
        '32', '--num_classes', '4', '--init_channels', '4', '--layers', '3', '--batch_size', '32', '--device', 'cpu',
        '--report_freq', '1000', '--epochs', '2']
# Appended to a copy of the page by the test only: the browser counts the images it decoded and the SVGs.
PROBE = ('<script>addEventListener("load", () => { const images = [...document.images]; document.title = '
         '"images " + images.length + " decoded " + images.filter(i => i.complete && i.naturalWidth > 0).length + '
         '" svg " + document.querySelectorAll("svg").length; });</script>')


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('report')
    load_script('train_search').main(TINY + ['--beta_decay_weight', '50', '--exp_path', str(root / 'search')])
    load_script('train').main(TINY + ['--auxiliary', '--exp_path', str(root / 'eval')])
    return root


def page_of(folder):
    assert visualize.main(['--report', str(folder)]) == [str(folder / 'report.html')]
    return (folder / 'report.html').read_text()


@pytest.mark.parametrize('kind, images, headings', [
    ('search', 5, ['Final numbers', 'Loss and accuracy', 'Cells', 'Validation accuracy and skip connections',
                   'Terms of the search methods', 'Architecture weights: normal cell, ops',
                   'Architecture weights: reduce cell, ops', 'Arguments']),
    ('eval', 1, ['Final numbers', 'Loss and accuracy', 'Cell', 'Arguments']),
])
def test_the_report_holds_everything_in_one_file(runs, kind, images, headings):
    page = page_of(runs / kind)
    assert re.findall(r'<h2>(.*?)</h2>', page) == headings
    sources = re.findall(r'<img alt="" src="([^"]+)"', page)
    assert len(sources) == images
    assert all(base64.b64decode(source.split(',', 1)[1]).startswith(b'\x89PNG') for source in sources)
    assert page.count('<svg') == 2 and not re.search(r'(src|href)="(https?:|//|file:)', page)
    assert '<th>best valid_top1</th>' in page if kind == 'search' else '<th>best test_top1</th>' in page


@pytest.mark.skipif(BROWSER is None, reason='no Chromium or Chrome here; .ci/run installs Debian\'s chromium')
@pytest.mark.parametrize('kind, images', [('search', 5), ('eval', 1)])
def test_the_report_opens_in_a_headless_browser(runs, kind, images, tmp_path):
    probed = tmp_path / 'probed.html'
    probed.write_text(page_of(runs / kind).replace('</body>', PROBE + '</body>'))
    result = subprocess.run([BROWSER, '--headless', '--no-sandbox', '--disable-gpu', '--virtual-time-budget=10000',
                             '--dump-dom', probed.as_uri()], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f'<title>images {images} decoded {images} svg 2</title>' in result.stdout


def test_a_folder_without_metrics_is_one_sentence(tmp_path):
    with pytest.raises(UserError, match='is not a folder; --report needs the folder a train.py or train_search.py'):
        visualize.main(['--report', str(tmp_path / 'missing')])
    assert not (tmp_path / 'missing').exists()
    with pytest.raises(UserError, match='holds no metrics.jsonl; --report needs the folder a train.py or'):
        visualize.main(['--report', str(tmp_path)])
    with pytest.raises(UserError, match='give exactly one of'):
        visualize.main(['DARTS_V2', '--report', str(tmp_path)])
