"""Procedural synthetic dental radiographs with exact annotations (see generator.py)."""
