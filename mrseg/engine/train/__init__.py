"""The `mrseg train` job (see mrseg/engine/__init__.py)."""
