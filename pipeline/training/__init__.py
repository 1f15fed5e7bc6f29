"""Training: Cold Diffusion restorers (with Ray Train) and the demo DDPM."""
