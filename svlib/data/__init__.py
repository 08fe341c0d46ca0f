"""Data helpers for svlib: fetching public audio (Debian packages) and, later, corpus lists."""
