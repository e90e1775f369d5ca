"""Shipped data files (human gene ID table, ortholog tables, mouse gene table)."""
