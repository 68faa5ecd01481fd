"""Serving model versions: loading each once, in-process or in a process of its own."""
