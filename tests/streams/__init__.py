"""Unit tests of the Faust-side modules in streams/, with no services."""
