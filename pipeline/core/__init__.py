"""The algorithm: pure functions over text, tokens and tensors (no files, no params)."""
