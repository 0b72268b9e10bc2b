"""The lowest layer: errors, registries, plug-in loading, devices and threads, files, cache folders, formatting.

Nothing here imports any other part of adc.
"""
