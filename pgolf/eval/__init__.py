"""Evaluation: exact bits-per-byte, sliding windows and n-gram caches (DESIGN.md §7)."""
