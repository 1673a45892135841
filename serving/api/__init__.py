"""The HTTP API of the image-validation service."""
