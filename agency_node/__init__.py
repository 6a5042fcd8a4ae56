"""The agency node: its own records, local evaluation, signed minimal answers."""
