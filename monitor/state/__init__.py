"""Where state outlives one process: event-id dedup and snapshots, in memory or in Redis."""
