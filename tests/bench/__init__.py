"""Benchmarks (`make bench`). Each prints its figures as ratios against a baseline measured in
the same run, so the numbers compare across machines; nothing here asserts a timing."""
