"""Summaries, HTML reports and contact sheets from a run's files."""
