"""Shipped data files (gene ID table)."""
