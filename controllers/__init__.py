"""The cluster controllers (``katalyst-controller``): KCC/CNC resolution and the CNR lifecycle."""
