"""Indexing: embeddings, vector store, BM25."""
