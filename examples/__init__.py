"""Examples that run for real on one machine."""
