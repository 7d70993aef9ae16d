"""automata-lens: benchmarks."""
