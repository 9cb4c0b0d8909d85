"""Held-out evaluation sets: decontamination against them (word n-grams), and the held-out slice of each mixture group."""
