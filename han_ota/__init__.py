"""The han-ota command line and daemon: they only wire gateway/ and radios/ together."""
