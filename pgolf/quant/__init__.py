"""Quantization: TurboQuant, int6/int8 baselines, QAT and the byte-budgeted artifact."""
