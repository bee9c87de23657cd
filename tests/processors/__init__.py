"""Unit tests of the pure domain logic in processors/."""
