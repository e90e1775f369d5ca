"""Metrics, confusion, calibration and reports."""
