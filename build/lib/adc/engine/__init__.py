"""The search engine: options validated once, the loop in phases (build, play, select), callbacks, workers.

(A package named ``search`` would be shadowed by the function :func:`adc.search`.)
"""
