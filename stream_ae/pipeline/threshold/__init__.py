"""Thresholds: the contract (``base``: apply, export, restore) and the adaptive mean + k·std
rule per partition (``adaptive``)."""
