"""The book's tooling: what runs, shows and renders the chapters; no science here.

``build`` (``make book``: every chapter with papermill), ``sweep`` (grids of notebook or
function cells, resumable, local or on Dask), ``site`` (the executed chapters as a static HTML
book), ``plotting`` (figures), ``widgets`` (the explorer of chapter 08) and ``nbclean`` (the git
filter that keeps notebooks without outputs). Built on everything below.
"""
