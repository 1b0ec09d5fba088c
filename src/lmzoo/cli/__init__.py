"""The `lmzoo` command line."""
