"""kit's built-in backbone families, one module per family, each a plugin on kit's public API."""
