"""automata-lens: analyses."""
