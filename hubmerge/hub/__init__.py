"""Thin helpers over huggingface_hub: token lookup, the Hub weight source, publishing, and the local Hub server."""
