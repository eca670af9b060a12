"""Pytest configuration shared by the test files."""

# Run as a subprocess by test_sharding.py (it sets XLA_FLAGS before importing
# jax); importing it here for doctest collection would give every test 8 devices.
collect_ignore = ["_sharding_worker.py"]
