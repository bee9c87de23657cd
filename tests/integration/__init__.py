"""Integration tests: real `presale worker`s, the real Kafka broker and Redis."""
