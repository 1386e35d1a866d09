"""Example inputs for signalbox and their generator (``python examples/generate.py``)."""
