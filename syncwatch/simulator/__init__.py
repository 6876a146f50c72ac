"""Simulated Timbal and Paragon APIs: a deterministic, fast HTTP upstream for demos and tests.

The fleet (`fleet`, `specs`) is generated once from a seed; every time-derived field is a pure
function of the simulated clock (`clock`, `views`). Both APIs (`timbal`, `paragon`, sharing
`upstream`) answer from one `state`, which faults (`faults`) and the /_sim endpoints
(`control`) change; `app` is the ASGI app and `server` runs it.
"""

from syncwatch.simulator.app import build_app
from syncwatch.simulator.clock import ScaledClock
from syncwatch.simulator.config import SimConfig
from syncwatch.simulator.faults import FAULT_KINDS, POISON_VARIANTS
from syncwatch.simulator.paragon import rsa_keypair
from syncwatch.simulator.server import SimulatorThread, serve

__all__ = [
    "FAULT_KINDS",
    "POISON_VARIANTS",
    "ScaledClock",
    "SimConfig",
    "SimulatorThread",
    "build_app",
    "rsa_keypair",
    "serve",
]
