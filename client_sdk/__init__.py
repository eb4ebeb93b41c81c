"""What data owners and model developers run locally. Raw data never leaves this package.

``Identity`` signs, ``RKMESpec`` describes data without revealing it, ``MarketClient`` publishes,
searches, downloads and localises; ``client_sdk.reuse`` turns learnwares into estimators.
"""
from protocol.identity import Identity

from .client import Match, MarketClient, Mixture, SearchResult
from .learnware import Learnware
from .rkme import RKMESpec

__all__ = ["Identity", "MarketClient", "RKMESpec", "Learnware", "SearchResult", "Match",
           "Mixture"]
