"""Models built on backbones: branches, heads, and the registry of model kinds (``registry.KINDS``)."""
