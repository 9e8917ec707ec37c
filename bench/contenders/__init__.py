"""One module per contender; each runs as its own process and prints {"users": N} on stdout."""
