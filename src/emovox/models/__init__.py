"""Models built on backbones: pooling, classification heads, fusion and voting."""
