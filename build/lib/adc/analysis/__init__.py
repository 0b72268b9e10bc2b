"""Analysis of a model: prunable units (graph), exact costs, the policy space, energy, latency tables, timers, profile."""
