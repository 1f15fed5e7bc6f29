"""Method math: pure functions over tensors (no Ray, no files, no devices beyond the tensors given)."""
