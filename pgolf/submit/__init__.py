"""Submission: a records folder in the challenge's layout with a self-contained train_gpt.py."""
