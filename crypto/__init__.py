"""Object encryption and the key hierarchy; no HTTP and no I/O but the key store."""
