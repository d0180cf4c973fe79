"""Metrics, bootstrap intervals, comparisons and the report, from prediction tables. No torch
here: these stages read CSV files and start fast."""
