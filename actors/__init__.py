"""raybus actors: plain classes (endpoint, router, breaker, worker, discovery, autoscaler)
that unit tests drive without Ray; ``ray.remote`` is applied where the topology is wired."""
