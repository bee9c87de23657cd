# Developer entry points. Add new targets below; keep each a thin call to a script.

.PHONY: services services-down

# Start (or reuse) a local Kafka broker on 127.0.0.1:9092 and Redis on 127.0.0.1:6379.
services:
	bash deploy/local/services.sh up

# Stop what `make services` started.
services-down:
	bash deploy/local/services.sh down
