"""Stages that keep or drop documents, or rewrite their text: heuristics (with quantile thresholds), URL lists, PII, word counts, sampling, a user's filter or stage."""
