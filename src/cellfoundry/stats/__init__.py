"""Bottom-layer statistics: classification metrics and confidence calibration.

Imported by ``models``, ``tuning``, ``evaluation``, ``jobs`` and ``demo``; imports nothing else from
cellfoundry (an import-linter contract in pyproject.toml keeps it so).
"""
