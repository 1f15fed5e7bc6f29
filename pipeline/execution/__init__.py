"""Running steps on a Ray cluster: drivers, workers, dispatch, run locks, the private cluster."""
