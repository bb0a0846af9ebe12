"""The BOSS engine, its local backend, and the Kubernetes operator (kopf)."""

__version__ = "0.1.0"
