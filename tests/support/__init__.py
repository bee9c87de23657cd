"""Helpers shared by the integration and replay tests."""
