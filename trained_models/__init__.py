"""automata-lens: trained_models."""
