"""Scoring stages: the one stage that runs any scorer (scorers/base.py) and the annotating scorers (language, quality, domain, language-model bits per byte)."""
