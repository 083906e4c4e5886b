"""The seed's import path, kept so its snippets run from the project folder (not installed)."""
