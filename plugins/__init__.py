"""kit's built-in plugins (installed as `kit_plugins`). Each uses only kit's public API."""
