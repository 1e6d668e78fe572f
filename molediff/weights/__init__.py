"""Shipped pretrained weights (safetensors + JSON model cards)."""
