"""The documentation's links hold: every relative link of README.md,
docs/*.md and store/*.md names a file that exists, and every #anchor (in
the same file, or file.md#anchor) is a heading of that file, by GitHub's
rules for heading ids.  No nginx, no Redis: only the files."""

import glob
import os
import re
import unicodedata

import pytest

import cdp_harness as h

DOCS = sorted([os.path.join(h.MAIN, 'README.md')]
              + glob.glob(os.path.join(h.MAIN, 'docs', '*.md'))
              + glob.glob(os.path.join(h.MAIN, 'store', '*.md')))

FENCE = re.compile(r'^\s*(```|~~~)')
HEADING = re.compile(r'^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$')
# [text](target) or [text](target "title"); an image's ![..](..) too
LINK = re.compile(r'\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?'
                  r'(?:\s+"[^"]*")?\s*\)')
CODE_SPAN = re.compile(r'(`+)(.+?)\1', re.S)


def prose(path):
    """(line number, line) of the file outside fenced code blocks."""
    out, fenced = [], None
    with open(path, encoding='utf-8') as f:
        for n, line in enumerate(f, 1):
            m = FENCE.match(line)
            if m:
                if fenced is None:
                    fenced = m.group(1)
                elif m.group(1) == fenced:
                    fenced = None
                continue
            if fenced is None:
                out.append((n, line.rstrip('\n')))
    return out


def slug(text):
    """GitHub's id of a heading: its text as rendered (code spans and
    links reduced to their text), lower case, punctuation dropped except
    '-' and '_', each space a '-'."""
    text = CODE_SPAN.sub(lambda m: m.group(2).strip(), text)
    text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', text)
    text = text.strip().lower()
    keep = []
    for c in text:
        cat = unicodedata.category(c)
        if c in '-_' or cat[0] in 'LN' or cat == 'Mn':
            keep.append(c)
        elif c == ' ':
            keep.append('-')
    return ''.join(keep)


_anchors = {}


def anchors(path):
    """The ids of a file's headings, with GitHub's -1, -2... for repeats."""
    path = os.path.realpath(path)
    if path not in _anchors:
        seen, ids = {}, set()
        for _n, line in prose(path):
            m = HEADING.match(line)
            if not m:
                continue
            base = slug(m.group(2))
            k = seen.get(base, 0)
            seen[base] = k + 1
            ids.add(base if k == 0 else '%s-%d' % (base, k))
        _anchors[path] = ids
    return _anchors[path]


def links(path):
    """(line number, target) of the file's links, code spans left out.  A
    link's text may run over lines, so paragraphs are searched whole."""
    out, para = [], []

    def search():
        if not para:
            return
        text = '\n'.join(line for _n, line in para)
        # blank a code span out, keeping its line ends
        text = CODE_SPAN.sub(lambda m: re.sub(r'[^\n]', ' ', m.group(0)),
                             text)
        for m in LINK.finditer(text):
            out.append((para[0][0] + text.count('\n', 0, m.start()),
                        m.group(1)))
        del para[:]

    last = None
    for n, line in prose(path):
        if not line.strip() or (last is not None and n != last + 1):
            search()                   # a blank line or a code block ends it
        if line.strip():
            para.append((n, line))
        last = n
    search()
    return out


def test_the_docs_are_there():
    names = [os.path.relpath(p, h.MAIN) for p in DOCS]
    for want in ('README.md', 'docs/directives.md', 'docs/api.md',
                 'docs/privacy.md', 'store/README.md'):
        assert want in names, names


def test_slug_follows_github():
    assert slug('Server-side events (Segment-compatible API)') == \
        'server-side-events-segment-compatible-api'
    assert slug('cdp_segment, cdp_profile_event') == \
        'cdp_segment-cdp_profile_event'
    assert slug('The privacy library `cdp_admin_v1` (store/admin.lua)') == \
        'the-privacy-library-cdp_admin_v1-storeadminlua'
    assert slug('Durability: the spool') == 'durability-the-spool'
    assert slug('`<prefix>:events`: every event') == 'prefixevents-every-event'


@pytest.mark.parametrize('path', DOCS,
                         ids=[os.path.relpath(p, h.MAIN) for p in DOCS])
def test_links_resolve(path):
    bad = []
    for n, target in links(path):
        if re.match(r'^[a-z][a-z0-9+.-]*:', target, re.I):
            continue                   # https:, mailto:: not ours to check
        file_part, _, anchor = target.partition('#')
        dest = path if not file_part else os.path.normpath(
            os.path.join(os.path.dirname(path), file_part))
        where = '%s:%d: %s' % (os.path.relpath(path, h.MAIN), n, target)
        if not os.path.exists(dest):
            bad.append(where + ': no such file')
        elif anchor:
            if not dest.endswith('.md'):
                bad.append(where + ': an anchor into a file that is not '
                           'markdown')
            elif anchor not in anchors(dest):
                bad.append(where + ': no heading with this id in '
                           + os.path.relpath(dest, h.MAIN))
    assert not bad, '\n'.join(bad)
