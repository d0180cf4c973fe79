"""The log line format every stage writes, in its rule's log file and on stderr."""

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
