"""Sentence embeddings for prompts and responses."""
