"""Apache Kafka as a transport (aiokafka): the transport, its offsets and its admin calls."""
