"""What carries calls between clients and workers: Ray (default), Kafka or SQS."""
