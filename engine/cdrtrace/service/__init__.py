"""The trace service: switches dial *57 into cdrtrace over FastAGI (agi) and HTTP (http);
server runs both listeners in one process."""
