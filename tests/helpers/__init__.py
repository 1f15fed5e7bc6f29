"""Builders and servers shared by the test files (imported as ``tests.helpers.<module>``)."""
