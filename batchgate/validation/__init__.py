"""Validation: rules, presets, and the engine that runs them over a batch."""

from batchgate.validation.engine import build_rules, validate_items

__all__ = ["build_rules", "validate_items"]
