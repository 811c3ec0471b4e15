"""Amazon SQS as a transport (aioboto3): the transport and its wire format and errors."""
