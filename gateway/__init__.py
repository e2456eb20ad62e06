"""OTA, GBCS and job logic of han-ota-gateway. Knows nothing of particular radios."""
