"""Declarative, typed, JSON-round-trippable search spaces and their named presets, one module per strategy."""
