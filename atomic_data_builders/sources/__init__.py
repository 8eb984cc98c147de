"""Readers of raw multi-domain data (Amazon 2014 / 2018 / 2023, CDSR split format)."""
