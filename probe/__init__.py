"""automata-lens: probe."""
