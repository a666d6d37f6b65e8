"""Sphinx settings for the rendered book. ``python -m symlib site`` (run by ``make book``) builds it
from a copy of this folder and the executed chapters; it is not meant to be built from docs/ alone.

Offline by design: nothing is fetched when the book is built or read. The theme ships its styles,
scripts and icons in its pip package; MyST-NB's widget scripts (require.js and the widget manager
from a CDN) are switched off, since symlib.book.site draws widgets as static HTML from their saved state;
math is shown as its TeX source instead of through MathJax (a CDN script).
"""
from docutils import nodes

project = "symlib"
author = "the symlib authors"
html_title = "symlib: the book"

extensions = ["myst_nb"]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

# the chapters were executed by papermill (make book); the site only renders them
nb_execution_mode = "off"
nb_ipywidgets_js = {}  # no widget scripts from a CDN (see above)
nb_merge_streams = True  # a cell's printed lines as one block
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]  # a page's headings may skip a level

html_theme = "sphinx_book_theme"
html_theme_options = {
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
    "use_download_button": True,  # the executed .ipynb of a chapter, from the site itself
    "use_fullscreen_button": False,
}
html_sidebars = {"**": ["navbar-logo.html", "sbt-sidebar-nav.html"]}  # the search box is in the header already
html_show_sourcelink = False
html_copy_source = True  # the download button's .ipynb / .md
html_last_updated_fmt = "%Y-%m-%d %H:%M"  # when the site was built


# ---- math as TeX, not MathJax ----

def _visit_math(self, node):
    self.body.append(f'<code class="math">{self.encode(node.astext())}</code>')
    raise nodes.SkipNode


def _visit_displaymath(self, node):
    self.body.append(f'<pre class="math">{self.encode(node.astext())}</pre>')
    raise nodes.SkipNode


html_math_renderer = "tex-source"


def setup(app):
    app.add_html_math_renderer("tex-source", (_visit_math, None), (_visit_displaymath, None))
