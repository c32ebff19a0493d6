"""Pure rules of the network: tiers, registry checks, lifecycle, routing, SLA, fees, recognition.

Nothing here does I/O or imports from the outer layers.
"""
