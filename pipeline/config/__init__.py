"""Job configurations (hashed into run directories) and the command-line flags that build them."""
