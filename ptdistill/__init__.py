"""ptdistill: knowledge distillation with PTLoss and the proxy-teacher coefficient search."""

__version__ = "0.1.0"
