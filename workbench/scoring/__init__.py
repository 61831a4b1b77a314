"""Scoring analyses against the demo world's truth (JSON reports; see each module)."""
