"""Platform drivers behind one neutral contract (see :mod:`platforms.contract`)."""
