"""Shared test helpers: tiny real models built in a temporary directory, free ports, server processes."""
