"""Finding, checking and loading diffusion models and restorers; tiny models built in code."""
