"""A small application used as the target of YAML watch entries in the tests."""
