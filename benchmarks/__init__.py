"""The Fashion-MNIST benchmark: does the searched policy beat uniform, random and sensitivity pruning,
and is the pruned model really faster on this machine's CPUs?

Run it with ``python -m benchmarks.run --full`` (``make bench``) or ``--quick``
(``make bench-quick``); see :mod:`benchmarks.run` for what each mode runs and
``benchmarks/results/`` for the committed results.
"""
