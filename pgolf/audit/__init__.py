"""Auditing artifacts as an attacker would: the hostile-artifact fuzzer (:mod:`fuzz`, its
systematic classes in :mod:`fuzz_classes`) and ``pgolf audit`` (:mod:`commands`)."""
