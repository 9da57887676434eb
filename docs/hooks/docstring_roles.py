"""MkDocs hook: show the Sphinx roles of FlowStone's docstrings as plain code in the API reference.

The docstrings name other objects Sphinx-style (``:class:`Definitions```, ``:meth:`~X.get```);
mkdocstrings renders the role as text before the code span. This drops the role, and keeps only
the last dotted component where the name starts with ``~`` (as Sphinx does).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mkdocs.config.defaults import MkDocsConfig
    from mkdocs.structure.files import Files
    from mkdocs.structure.pages import Page

ROLE = re.compile(r":(?:func|class|meth|attr|data|mod|exc|obj):<code>(~?)([^<]*)</code>")


def strip_roles(html: str) -> str:
    """``:class:<code>~a.B</code>`` becomes ``<code>B</code>``, and ``:func:<code>a.f</code>``
    becomes ``<code>a.f</code>``."""
    return ROLE.sub(lambda m: f"<code>{m[2].rsplit('.', 1)[-1] if m[1] else m[2]}</code>", html)


def on_page_content(html: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Applied to every page after its Markdown became HTML (mkdocstrings has run by then)."""
    del page, config, files
    return strip_roles(html)
