"""Recipes: spec (the typed schema, frozen) and loader (YAML + extends + --set overrides → spec)."""
