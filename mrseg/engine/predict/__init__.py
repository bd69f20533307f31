"""The `mrseg predict` job (see mrseg/engine/__init__.py)."""
