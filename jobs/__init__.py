"""Ray entry points (index, query, evaluate, ...): thin wiring over `retrieval`."""
