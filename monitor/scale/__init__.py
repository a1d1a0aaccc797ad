"""Scale-out mode: API replicas, worker processes and one detector owner, connected by Redis Streams."""
