"""The Faust app: settings, topics, codecs, agents, the Redis store, metrics, web, CLI."""
