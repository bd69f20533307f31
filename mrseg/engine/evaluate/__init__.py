"""The `mrseg eval` job (see mrseg/engine/__init__.py)."""
