"""Sans-I/O Zigbee OTA Upgrade server (cluster 0x0019) and its asyncio driver."""
