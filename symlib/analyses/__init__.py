"""The book's analyses, built from interventions.

``findings`` (the headline result over seeds, and the full runs the chapters show), ``compare``
(which program a network runs: chapter 04's cells), ``dynamics`` (alignment over training),
``analysis`` (natural states, the number line), ``explain`` (one swap, the program's side and
the network's: what the explorer shows), ``similarity`` (CKA, RSA), ``stats`` (means and
intervals over seeds), ``params`` (every chapter's parameters, checked before any work; the
smoke sizes), ``provenance`` and ``report`` (where a committed result came from; README blocks
printed from it). Built on ``symlib.intervene`` and below.
"""
