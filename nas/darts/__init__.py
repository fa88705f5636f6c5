"""emoDARTS search: supernet, architect (first/second order), derivation, memory estimate."""
