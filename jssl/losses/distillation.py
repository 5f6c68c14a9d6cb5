"""Self-distillation losses (DINO)."""

__all__: list[str] = []
