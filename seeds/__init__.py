"""Recorded presale streams, their generator and the independent batch reference."""
