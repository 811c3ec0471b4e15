"""The router's logic: names to pools (routing), balancing, the breaker, the queue core."""
