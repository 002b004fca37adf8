"""Ingest: reading files into Documents, chunking them, keeping an index in sync."""
