"""The Faust app: settings, topics, codecs, agents, Redis store, metrics, web, CLI."""
