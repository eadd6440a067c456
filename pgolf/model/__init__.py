"""Model: the seed GPT (DESIGN.md §4) and its layers."""
