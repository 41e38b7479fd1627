"""Test-only families written entirely under tests/: they register with the public decorators and run through the
CLI like the built-in ones (an experiment names this package in ``imports:``, docs/security.md)."""
