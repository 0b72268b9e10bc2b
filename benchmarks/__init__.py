"""adc's benchmarks: one harness (cells x variants, one runner, one reporter) and the suites it runs.

``python -m benchmarks --list`` names the suites; ``python -m benchmarks SUITE``
runs one (``make bench SUITE=...``), caching every row so a run resumes, and
writes ``benchmarks/results/SUITE.md`` and ``.csv``. See
:mod:`benchmarks.harness` (what a row measures), :mod:`benchmarks.suites` (the
suites, as data) and :mod:`benchmarks.reporter` (the page).
"""
