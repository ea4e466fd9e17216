"""The pure core: parses and verifies a notification, matches it against rules and decides the
calls. No I/O (an import contract keeps it so)."""
