"""Discovery's logic: the heartbeat registry and the catalogs of what pools serve."""
