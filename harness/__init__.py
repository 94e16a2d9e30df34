"""Evaluate 8-bit quantized LLMs against their bf16 originals."""
