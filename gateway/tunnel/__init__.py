"""The GBCS tunnel: Smart Energy Tunneling (cluster 0x0704) with the hub as client.

frames.py holds the cluster's payloads (typed, both directions); client.py the sans-I/O
client, one per device; service.py its asyncio side on a zigpy app.
"""
