"""The paper's benchmark rows as named configurations (``*.json`` beside this file)."""
