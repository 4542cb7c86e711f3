"""Vector store behind one small interface: an embedded default for one machine and a Qdrant server for clusters."""
