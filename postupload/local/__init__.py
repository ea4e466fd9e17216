"""The local stack `postupload run` starts: redis-server, emulator, web and worker under one supervisor."""
