"""Pruning: channel criteria, least-squares reconstruction, the pruner, pickle-free save/load, export."""
